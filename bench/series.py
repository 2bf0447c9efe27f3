"""Long ranges (issue 20): /api/series over a long history, the tick with tiers, the build.

    .venv/bin/python bench/series.py                 # SQLite figures, the tick against main
    .venv/bin/python bench/series.py --redis         # and Redis's (starts its own redis-server)
    .venv/bin/python bench/series.py --keep /tmp/long.sqlite3   # keep the database made

Makes a database as schema version 1 made them (before tiers): --readings readings (1,000,000)
one --interval (1 s) apart, ending now, random ints in [0, 100] with their stats, in a few
seconds. Then prints:
  - the one-time build of the rollups (the schema step, as the first start runs it);
  - start-up on it afterwards: create_app() in this process, and `random_stream.py --db`
    to its first /healthz answer (beside the same on an empty database);
  - server time of GET /api/series over the last 7 days and over the whole stream at 600
    points (Flask's test client: routing, the store, JSON; no network), median and p90 of
    --runs, and the 7-day answer's size gzipped as the server sends it;
  - the tick's CPU time (draw, keep: stats and the store's write, the fan-out with no
    client) with tiers and without: this code against --ref (default 1df339c, the last
    commit before tiers), in alternating
    subprocesses on fresh databases, a fake clock one --interval per tick (a minute's
    bucket closes every 60 ticks);
  - with --redis: the same stream in Redis: its one-time build, /api/series, and the fenced
    write with tiers against --ref's (the client's CPU, and Redis's own time per script from
    INFO commandstats).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from randstream import schema  # noqa: E402
from randstream.stats import Stats  # noqa: E402

WEEK = 7 * 86_400


def make_database(path: str, count: int, interval: float, seed: int = 1) -> tuple[float, float]:
    """A schema-version-1 database of `count` readings ending now; (seconds taken, first ts)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    end = time.time()
    first = end - (count - 1) * interval
    values = [rng.randint(0, 100) for _ in range(count)]
    stats = Stats(0, 100)
    for seq, value in enumerate(values, 1):
        stats.add(value, seq)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema.V0)
    db.execute("BEGIN")
    schema.exact_values_and_stream_id(db)
    db.executemany("INSERT INTO readings (seq, value, ts) VALUES (?, ?, ?)",
                   ((seq, v, first + (seq - 1) * interval) for seq, v in enumerate(values, 1)))
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                   [("stats", json.dumps(stats.state())), ("last_seq", str(count))])
    db.execute("PRAGMA user_version = 1")
    db.execute("COMMIT")
    db.close()
    return time.perf_counter() - started, first


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return sorted(out)


def ms(times: list[float]) -> str:
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    return f"{statistics.median(times) * 1e3:.2f} ms median, p90 {p90 * 1e3:.2f} ms"


def series_figures(app, first: float, end: float, runs: int) -> dict:
    """Server time of the two long answers; the 7-day answer's gzip size."""
    client = app.test_client()
    week = f"/api/series?from={end - WEEK:.3f}&to={end:.3f}&points=600"
    whole = f"/api/series?from={first:.3f}&to={end:.3f}&points=600"
    out = {}
    for name, url in (("7 days", week), ("whole stream", whole)):
        body = client.get(url).get_json()  # warm: the pages it reads are in the cache
        out[name] = (timed(lambda url=url: client.get(url).data, runs), body)
    gz = client.get(week, headers={"Accept-Encoding": "gzip"})
    assert gz.headers.get("Content-Encoding") == "gzip"
    out["gzip"] = (len(gz.data), len(gzip.decompress(gz.data)))
    return out


def print_series(label: str, figures: dict) -> None:
    for name in ("7 days", "whole stream"):
        times, body = figures[name]
        count = sum(b["count"] for b in body["buckets"])
        print(f"{label} /api/series {name:12s} {ms(times)}  (step {body['step']:g} s, "
              f"{len(body['buckets'])} buckets, {count:,} readings)")
    size, plain = figures["gzip"]
    print(f"{label} 7-day answer        {size / 1024:.1f} KB gzip ({plain / 1024:.1f} KB JSON)")


def process_start(db: str) -> float:
    """Seconds from `random_stream.py --db` to its first /healthz answer."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "random_stream.py"), "--port", str(port),
                             "--db", db, "--log-level", "WARNING"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                return time.perf_counter() - started
            except OSError as exc:
                if getattr(exc, "code", None):  # an HTTP answer (503 at first): it is up
                    return time.perf_counter() - started
                if proc.poll() is not None or time.perf_counter() - started > 60:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(20)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Run in a subprocess with the code at argv[1] first on the path: per-tick microseconds of
# CPU (this process's: other programs on the machine move wall-clock figures far more).
TICK = """
import os, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from random_stream import create_app
from randstream.config import Settings
n, interval, redis_url = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
tmp = tempfile.mkdtemp()
if redis_url != "-":
    from randstream.redis_store import Keys, open_redis_store
    store = open_redis_store(redis_url, 1_000_000, 5.0, Keys.with_prefix(f"tick{os.getpid()}:"))
    assert store.lease.claim(0).leading
    from randstream.history import Reading
    now = 1.7e9
    def one(seq):
        store.append(Reading(seq, seq % 101, now + seq * interval), {"lo": 0, "hi": 100})
    for seq in range(1, 501):
        one(seq)
    import redis
    admin = redis.Redis.from_url(redis_url)
    admin.config_resetstat()
    t = time.process_time()
    for seq in range(501, 501 + n):
        one(seq)
    client = (time.process_time() - t) / n * 1e6
    print(client, admin.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
    sys.exit(0)
else:
    app = create_app(Settings(db=os.path.join(tmp, "t.sqlite3"), async_mode="threading",
                              interval=interval, seed=1))
    stream = app.extensions["stream"]
    clock = [1.7e9]
    def wall():
        clock[0] += interval
        return clock[0]
    stream.ticker.wall_clock = wall
    for _ in range(1000):
        stream.ticker.tick()
    t = time.process_time()
    for _ in range(n):
        stream.ticker.tick()
print((time.process_time() - t) / n * 1e6)
"""


def export_ref(ref: str) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="bench-series-"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def tick_figures(ref_root: Path, n: int, rounds: int, interval: float, redis_url: str = "-"):
    """Per-tick microseconds, this code and the ref's, in alternating subprocesses."""
    out: dict[str, list[float]] = {"with": [], "without": [], "with server": [],
                                   "without server": []}
    for _ in range(rounds):
        for name, root in (("without", ref_root), ("with", ROOT)):
            run = subprocess.run([sys.executable, "-c", TICK, str(root), str(n), str(interval),
                                  redis_url], capture_output=True, text=True, check=True)
            figures = [float(x) for x in run.stdout.strip().splitlines()[-1].split()]
            out[name].append(figures[0])
            if len(figures) > 1:  # Redis's own time per script
                out[name + " server"].append(figures[1])
    return out


def print_ticks(label: str, ref: str, ticks: dict, what: str = "") -> None:
    a, b = statistics.median(ticks[f"without{what}"]), statistics.median(ticks[f"with{what}"])
    print(f"{label} {b:.1f} us with tiers, {a:.1f} us without ({ref}): "
          f"{(b / a - 1) * 100:+.1f}% (medians of {len(ticks['with'])} alternating runs; with "
          f"{', '.join(f'{x:.1f}' for x in ticks[f'with{what}'])}; without "
          f"{', '.join(f'{x:.1f}' for x in ticks[f'without{what}'])})")


def redis_part(url: str, path: str, runs: int, first: float, end: float) -> None:
    """The same readings in Redis: the one-time build, /api/series."""
    import redis

    from random_stream import create_app
    from randstream.config import Settings
    from randstream.redis_store import Keys

    client = redis.Redis.from_url(url)
    client.flushdb()
    keys = Keys.with_prefix()
    db = sqlite3.connect(path)
    started = time.perf_counter()
    rows = db.execute("SELECT seq, value, ts FROM readings ORDER BY seq")
    while chunk := rows.fetchmany(20_000):
        with client.pipeline(transaction=False) as pipe:
            for seq, value, ts in chunk:
                pipe.xadd(keys.readings, {"v": value, "t": repr(ts)}, id=f"{seq}-0")
            pipe.execute()
    client.set(keys.seq, chunk and chunk[-1][0] or db.execute("SELECT MAX(seq) FROM readings")
               .fetchone()[0])
    db.close()
    print(f"redis   stream filled            {time.perf_counter() - started:.1f} s (no tiers yet)")
    started = time.perf_counter()
    app = create_app(Settings(message_queue=url, async_mode="threading", db=None))
    print(f"redis   one-time build + start   {time.perf_counter() - started:.2f} s "
          f"(create_app(): folds every reading into the tiers, 5,000 per script)")
    print_series("redis  ", series_figures(app, first, end, runs))
    app.extensions["stream"].close()


def start_redis() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    for _ in range(200):
        try:
            redis.Redis(port=port).ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    parser.add_argument("--runs", type=int, default=50, help="requests timed per range")
    # 1df339c: main as this work began, the last commit without tiers
    parser.add_argument("--ref", default="1df339c", help="the code without tiers (a git ref)")
    parser.add_argument("--ticks", type=int, default=20_000, help="ticks timed per run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating tick runs per side")
    parser.add_argument("--redis", action="store_true", help="also Redis (starts redis-server)")
    parser.add_argument("--keep", help="make the database here and keep it")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-series-db-")
    path = args.keep or os.path.join(tmp, "long.sqlite3")
    try:
        from random_stream import create_app
        from randstream.config import Settings
        from randstream.store import SqliteStore

        made, first = make_database(path, args.readings, args.interval)
        end = first + (args.readings - 1) * args.interval + args.interval / 2
        size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        print(f"database        {args.readings:,} readings over "
              f"{(end - first) / 86_400:.1f} days, made in {made:.1f} s ({size / 1e6:.0f} MB)")
        started = time.perf_counter()
        SqliteStore(path, retention=10**9).close()
        print(f"sqlite  one-time build           {time.perf_counter() - started:.2f} s "
              f"(schema step 2 at the first start: per-minute and per-hour rows)")
        starts = timed(lambda: create_app(Settings(db=path, async_mode="threading",
                                                   log_level="WARNING"))
                       .extensions["stream"].close(), 5)
        print(f"sqlite  start-up after it        {ms(starts)} (create_app(), 5 runs)")
        full = sorted(process_start(path) for _ in range(3))
        empty_db = os.path.join(tmp, "empty.sqlite3")
        empty = sorted(process_start(empty_db) for _ in range(3))
        print(f"sqlite  process to first answer  {statistics.median(full):.2f} s "
              f"(an empty database: {statistics.median(empty):.2f} s; medians of 3)")
        app = create_app(Settings(db=path, async_mode="threading"))
        print_series("sqlite ", series_figures(app, first, end, args.runs))
        app.extensions["stream"].close()

        ref_root = export_ref(args.ref)
        ticks = tick_figures(ref_root, args.ticks, args.rounds, args.interval)
        print_ticks("sqlite  tick CPU, store write incl.", args.ref, ticks)
        if args.redis:
            proc, url = start_redis()
            try:
                redis_part(url, path, args.runs, first, end)
                ticks = tick_figures(ref_root, args.ticks // 4, args.rounds, args.interval, url)
                print_ticks("redis   fenced write, client CPU", args.ref, ticks)
                print_ticks("redis   fenced write, Redis's time", args.ref, ticks, " server")
            finally:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(ref_root, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
