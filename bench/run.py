"""Benchmark the stream server against a naive Flask-SocketIO app and two peers.

One command (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --only peers          # or matrix, big, herd; comma-separated

Four parts, each can run alone (``--only``):

matrix  for each client count (``--clients``, default 1000,10000), async mode (``--modes``)
        and target (``real`` = random_stream.py with ``--db :memory:``, ``naive`` =
        bench/naive_app.py): one row, then the ratio real/naive.
big     eventlet with ``--big-clients`` (19,500): the fd hard limit here is 20,000, so the
        server gets --max-connections N+100 and the clients come from two generator
        processes (each its own limit) over several 127.0.0.x source addresses.
herd    ``--herd-clients`` (10,000) on a server with a SQLite --db, SIGTERM, a new server on
        the same port and database; the clients reconnect with static/js/connection.js's
        backoff and jitter and resume {after: last seq}: time to rejoin and to be gap-free,
        tick gaps, RSS.
peers   this server, the naive app, Node's socket.io (bench/peers/node_server.mjs, installed
        by ``npm ci`` in bench/peers) and python-socketio's ASGI server on uvicorn
        (bench/peers/asgi_app.py) at ``--peer-clients``, with each one's ratio to this server.
hosts   ``python random_stream.py`` (eventlet), ``gunicorn -k gevent -w 1`` and ``gunicorn -k
        gevent -w 2`` with ``--message-queue`` (a redis-server started here; ``gunicorn2r``:
        with ``--reuse-port``) at ``--host-clients``, each with its ratio to random_stream.py
        in the same run; then the two workers at ``--host-big-clients`` (30,000: two
        generator processes over several source addresses). The
        one-process servers are pinned to the first CPU; the two workers, their generators
        and Redis share both (so their CPU per message includes no idle core, and their
        latency the generators' load).

Every server is started on a free 127.0.0.1 port pinned to the first CPU, the load
generators (bench/loadgen.py) on the second; every process started is stopped at the end,
on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REQUIREMENTS = BENCH / "requirements.txt"


def ensure_requirements() -> None:
    """Install bench/requirements.txt into this interpreter if anything is missing."""
    try:
        import orjson  # noqa: F401
        import psutil  # noqa: F401
        import uvicorn  # noqa: F401  (the python-socketio ASGI peer)

        if sys.platform != "win32":
            import uvloop  # noqa: F401
    except ImportError as exc:
        if sys.prefix == sys.base_prefix:  # not a virtualenv: leave the system's Python alone
            sys.exit(
                f"bench: {exc.name} is missing. Run with the project's virtualenv "
                f"(.venv/bin/python bench/run.py), which installs it, or: pip install -r {REQUIREMENTS}"
            )
        print(
            f"installing {REQUIREMENTS.relative_to(BENCH.parent)} into {sys.prefix}",
            file=sys.stderr,
        )
        subprocess.check_call(
            [sys.executable, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)]
        )


ensure_requirements()
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402

SERVER_SETTLE = 2.0  # seconds after /healthz before the 0-client RSS sample
CLIENT_SETTLE = 2.0  # seconds after the ramp before the N-client RSS sample and the window


def percentile(sorted_values, q: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def period_stats(times_by_seq: dict[int, float], interval: float) -> dict:
    """Mean period, drift and p99 jitter of a per-seq time series (ts or arrival)."""
    seqs = sorted(times_by_seq)
    if len(seqs) < 2:
        return {"period_ms": math.nan, "drift_pct": math.nan, "jitter_p99_ms": math.nan}
    t = [times_by_seq[s] for s in seqs]
    span_ticks = seqs[-1] - seqs[0]
    period = (t[-1] - t[0]) / span_ticks
    jitter = sorted(
        abs((t[i + 1] - t[i]) / (seqs[i + 1] - seqs[i]) - interval) for i in range(len(seqs) - 1)
    )
    return {
        "period_ms": period * 1e3,
        "drift_pct": (period - interval) / interval * 100,
        "jitter_p99_ms": percentile(jitter, 99) * 1e3,
    }


REAL_ROOT = harness.ROOT  # where random_stream.py is taken from; --ref points it at an export


def export_ref(ref: str) -> Path:
    """Export commit ``ref`` to a temporary folder (git archive: the repository is not touched)."""
    dest = Path(tempfile.mkdtemp(prefix=f"bench-code-{ref.replace('/', '_')}-"))
    archive = subprocess.run(
        ["git", "archive", ref], cwd=harness.ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


PEERS = BENCH / "peers"


def ensure_node_peer() -> str | None:
    """``npm ci`` in bench/peers (socket.io, pinned by its package-lock.json) once; None if
    it works, else why the Node peer is skipped."""
    import shutil

    if not shutil.which("node") or not shutil.which("npm"):
        return "node/npm not found"
    if not (PEERS / "node_modules" / "socket.io").is_dir():
        print("bench: npm ci in bench/peers (socket.io for the Node peer)", file=sys.stderr)
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=PEERS, timeout=300
        )
        if done.returncode != 0:
            return f"npm ci failed ({done.returncode})"
    return None


PEER_LABELS = {
    "real": "this server",
    "naive": "naive Flask-SocketIO",
    "node": "Node socket.io",
    "asgi": "python-socketio ASGI/uvicorn",
}
HOST_LABELS = {
    "real": "python random_stream.py",
    "gunicorn": "gunicorn -k gevent -w 1",
    "gunicorn2": "gunicorn -k gevent -w 2",
    "gunicorn2r": "gunicorn -k gevent -w 2 --reuse-port",
}
HOST_TARGETS = ("gunicorn", "gunicorn2", "gunicorn2r")
TWO_WORKERS = ("gunicorn2", "gunicorn2r")
MAX_WORKER_CONNECTIONS = 18000  # per gunicorn worker: its fd budget (+1,344) under the hard 20,000


def host_env(target: str, interval: float, max_connections: int, redis_url: str = "") -> dict:
    """The RANDOM_STREAM_* settings of a gunicorn target's app (create_app reads them)."""
    env = {
        "RANDOM_STREAM_INTERVAL": str(interval),
        "RANDOM_STREAM_MAX_CONNECTIONS": str(max_connections),
    }
    if target in TWO_WORKERS:
        env["RANDOM_STREAM_MESSAGE_QUEUE"] = redis_url  # the history lives there
    else:
        env["RANDOM_STREAM_DB"] = ":memory:"
    return env


def server_command(
    target: str,
    mode: str,
    port: int,
    interval: float,
    extra: list[str],
    db: str = ":memory:",
    max_connections: int = 20000,
) -> list[str]:
    if target == "node":
        return [
            "node",
            str(PEERS / "node_server.mjs"),
            "--port",
            str(port),
            "--interval",
            str(interval),
        ]
    if target == "asgi":
        return [
            harness.PYTHON,
            str(PEERS / "asgi_app.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--interval",
            str(interval),
        ]
    common = [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--interval",
        str(interval),
        "--async-mode",
        mode,
    ]
    if target == "naive":
        return [harness.PYTHON, str(BENCH / "naive_app.py"), *common]
    if target in HOST_TARGETS:
        # As the README says to run it, from the project root (its gunicorn.conf.py).
        workers = {"gunicorn": ["-w", "1"], "gunicorn2": ["-w", "2"],
                   "gunicorn2r": ["-w", "2", "--reuse-port"]}[target]
        return [harness.PYTHON, "-m", "gunicorn", "-k", "gevent", *workers,
                "--bind", f"127.0.0.1:{port}", *extra, "random_stream:create_app()"]
    return [
        harness.PYTHON,
        str(REAL_ROOT / "random_stream.py"),
        *common,
        "--db",
        db,
        "--max-connections",
        str(max_connections),
        *extra,
    ]


def generator_args(
    args, procs: int, index: int, sources: int, concurrency: int | None = None
) -> list[str]:
    """loadgen.py options of generator ``index`` of ``procs``; with ``sources``, its own
    127.0.0.x source addresses (each address has its own ephemeral ports)."""
    out = ["--batch", str(args.batch), "--connect-timeout", str(args.connect_timeout)]
    if concurrency:
        out += ["--concurrency", str(concurrency)]
    if sources:
        first = 2 + index * sources
        out += ["--source-addresses", ",".join(f"127.0.0.{first + k}" for k in range(sources))]
    return out


def run_one(
    target: str,
    mode: str,
    clients: int,
    args,
    workdir: Path,
    procs: int | None = None,
    sources: int = 0,
    max_connections: int | None = None,
    concurrency: int | None = None,
    redis_url: str = "",
) -> dict:
    """Start one server, load it with ``clients`` clients, return the figures.

    ``--max-connections`` is N + 100, not more: the server keeps the descriptors under its
    limit that the sessions do not take for connections still waiting for their request
    (at most 1,024), and closes the longest-waiting beyond that. The two gunicorn workers
    (gunicorn2) and their generators share every CPU."""
    if max_connections is None:
        max_connections = clients + 100
    if target in TWO_WORKERS:
        max_connections = min(max_connections, MAX_WORKER_CONNECTIONS)  # per worker
    cpus = harness.available_cpus()
    shared = target in TWO_WORKERS or len(cpus) < 2
    server_cpus = None if shared else {cpus[0]}
    gen_cpus = None if shared else {cpus[1]}
    port = harness.free_port()
    tag = f"{target}-{mode}-{clients}"
    server = harness.ServerProcess(
        tag,
        server_command(
            target,
            mode,
            port,
            args.interval,
            (args.host_args if target in HOST_TARGETS else args.real_args).split(),
            max_connections=max_connections,
        ),
        port,
        server_cpus,
        workdir / f"{tag}.log",
        env=host_env(target, args.interval, max_connections, redis_url)
        if target in HOST_TARGETS else None,
        cwd=REAL_ROOT,  # --ref: gunicorn serves that commit's app and gunicorn.conf.py too
    )
    gens: list[harness.GeneratorProcess] = []
    try:
        server.wait_ready(args.ready_timeout)
        time.sleep(SERVER_SETTLE)
        rss0 = server.rss()
        procs = max(1, min(procs or args.procs, clients))
        for i in range(procs):
            share = clients // procs + (1 if i < clients % procs else 0)
            gens.append(
                harness.GeneratorProcess(
                    port,
                    share,
                    gen_cpus,
                    workdir / f"{tag}-{i}.f64",
                    generator_args(args, procs, i, sources, concurrency),
                )
            )
        ramp_timeout = args.connect_timeout * (clients / args.batch + 2) + 60
        before_ramp = server.metrics()
        ramped = [g.read("ramped", ramp_timeout) for g in gens]
        time.sleep(CLIENT_SETTLE)  # > one presence period: the ramp's last `viewers` is out
        after_ramp = server.metrics()
        rss_idle = server.rss()
        processes = len(server.processes())
        spread = established_per_process(server, port)
        window_start = time.time() + 0.05
        window_end = window_start + args.duration
        profiler = None
        if args.profile:
            # py-spy samples the server from the generator's CPU for the whole window.
            profiler = harness.spawn(
                [
                    str(Path(harness.PYTHON).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--duration",
                    str(int(args.duration)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--subprocesses",  # gunicorn's workers
                    "--output",
                    str(Path(args.profile) / f"{tag}.txt"),
                ],
                gen_cpus,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        server_cpu = min(server_cpus) if server_cpus else 0
        busy0 = harness.cpu_busy_seconds(server_cpu)
        window_metrics = [server.metrics()]
        cpu0, gcpu0 = server.cpu_seconds(), sum(g.cpu_seconds() for g in gens)
        wall0 = time.monotonic()
        for g in gens:
            g.start(window_start, window_end, args.grace)
        for g in gens:
            g.read("window_end", args.duration + 30)
        cpu1, gcpu1 = server.cpu_seconds(), sum(g.cpu_seconds() for g in gens)
        window_metrics.append(server.metrics())
        wall = time.monotonic() - wall0
        busy1 = harness.cpu_busy_seconds(server_cpu)
        rss_end = server.rss()
        results = [g.read("result", args.grace + 60) for g in gens]
        if profiler is not None:
            profiler.wait(30)
    finally:
        for g in gens:
            g.stop()
        server.stop()

    latencies = array("d")
    for g in gens:
        path = Path(g.samples_out)
        if path.exists():
            latencies.frombytes(path.read_bytes())
            path.unlink()
    lat = sorted(latencies)
    seq_ts: dict[int, float] = {}
    first_arrival: dict[int, float] = {}
    for r in results:
        for s, ts in r["seq_ts"].items():
            seq_ts[int(s)] = ts
        for s, t in r["first_arrival"].items():
            s = int(s)
            first_arrival[s] = min(t, first_arrival.get(s, t))
    in_window = len(seq_ts)
    held = sum(r["clients"] for r in results)
    messages = sum(r["messages"] for r in results)
    errors: dict[str, int] = {}
    for r in ramped:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    ts_stats = period_stats(seq_ts, args.interval)
    arrival_stats = period_stats(first_arrival, args.interval)
    return {
        "target": target,
        "mode": mode,
        "requested": clients,
        "connected": sum(r["connected"] for r in ramped),
        "failed": sum(r["failed"] for r in ramped),
        "connect_errors": errors,
        "ramp_s": max(r["ramp_s"] for r in ramped),
        "held": held,
        "disconnects": sum(r["disconnects"] for r in results),
        "readings": in_window,
        "messages": messages,
        "missed": held * in_window - messages,
        "duplicates": sum(r["duplicates"] for r in results),
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "max_ms": (lat[-1] if lat else math.nan) * 1e3,
        "period_ms": ts_stats["period_ms"],
        "drift_pct": ts_stats["drift_pct"],
        "jitter_p99_ms": ts_stats["jitter_p99_ms"],
        "arrival_jitter_p99_ms": arrival_stats["jitter_p99_ms"],
        "cpu_us_per_msg": (cpu1 - cpu0) / messages * 1e6 if messages else math.nan,
        "server_cpu_pct": (cpu1 - cpu0) / wall * 100,
        "rss_mb": rss_end / 2**20,
        "kb_per_client": (rss_idle - rss0) / 1024 / held if held else math.nan,
        "gen_cpu_pct": (gcpu1 - gcpu0) / wall * 100,
        # Anything else that ran on the server's CPU meanwhile (other programs, interrupts):
        # if this is more than a few %, the machine was not quiet and the figures are pessimistic.
        "other_cpu_pct": max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / wall * 100
        if server_cpus
        else math.nan,
        "gen_us_per_msg": (gcpu1 - gcpu0) / messages * 1e6 if messages else math.nan,
        # How long readings waited in the generator's socket buffers before it read them;
        # latency comes from kernel receive timestamps, so this delay is not in it.
        "gen_lag_p99_ms": max(
            (r["gen_lag_ms"].get("p99", math.nan) for r in results), default=math.nan
        ),
        "other_events": {
            name: sum(r["other_events"].get(name, 0) for r in results)
            for name in {name for r in results for name in r["other_events"]}
        },
        "processes": processes,
        "spread": spread,
        # The server's own figures (/metrics; "-" for the peers): the mean time to hand one
        # reading to every client in the window, and the `viewers` broadcasts during the
        # ramp (a herd of joins: one a presence period at most) and in the window (none:
        # nobody joins or leaves).
        "bcast_ms": _ratio(window_metrics, "random_stream_broadcast_seconds_sum",
                           "random_stream_broadcast_seconds_count", 1e3),
        "viewers_ramp": _delta([before_ramp, after_ramp], "random_stream_viewers_broadcasts_total"),
        "viewers_window": _delta(window_metrics, "random_stream_viewers_broadcasts_total"),
    }


def _delta(samples: list[dict], name: str) -> float | None:
    first, last = samples[0].get(name), samples[-1].get(name)
    return None if first is None or last is None else last - first


def _ratio(samples: list[dict], top: str, bottom: str, scale: float = 1.0) -> float | None:
    a, b = _delta(samples, top), _delta(samples, bottom)
    return None if a is None or not b else a / b * scale


def established_per_process(server, port: int) -> list[int]:
    """Clients per serving process (gunicorn's workers; the one process otherwise), by its
    established TCP connections on ``port``."""
    counts = []
    for p in server.processes():
        try:
            conns = p.net_connections(kind="tcp")
        except Exception:
            continue
        n = sum(1 for c in conns if c.status == "ESTABLISHED" and c.laddr and c.laddr.port == port)
        if n:
            counts.append(n)
    return counts


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    """A redis-server without persistence on a free port, for the gunicorn2 target."""
    import shutil

    if not shutil.which("redis-server"):
        raise RuntimeError("redis-server not found (the two-worker host needs it)")
    port = harness.free_port()
    proc = harness.spawn(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], None, stdout=open(workdir / "redis.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    import socket as socket_module

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket_module.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("redis-server did not answer")


def run_hosts(args, workdir: Path, measure) -> list[dict]:
    """The hosts part: random_stream.py and gunicorn (1 and 2 workers) at each
    --host-clients, then the two workers at --host-big-clients."""
    rows = []
    redis_proc, redis_url = None, ""
    try:
        two = [t for t in args.host_target_list if t in TWO_WORKERS]
        if two:
            redis_proc, redis_url = start_redis(workdir)
        for n in args.host_counts:
            for target in args.host_target_list:
                kw = {"redis_url": redis_url, "procs": 2} if target in TWO_WORKERS else {}
                if (row := measure(target, "gevent" if target != "real" else "eventlet", n,
                                   **kw)) is not None:
                    rows.append(row)
        if args.host_big_clients and two:
            row = measure(two[0], "gevent", args.host_big_clients, procs=2,
                          sources=args.sources, redis_url=redis_url, concurrency=120)
            if row is not None:
                rows.append(row)
    finally:
        if redis_proc is not None:
            harness.stop(redis_proc)
    return rows


def run_herd(args, workdir: Path) -> dict:
    """The restart herd: ``--herd-clients`` clients on the real server (eventlet, a SQLite
    --db), SIGTERM, a new server on the same port and database; the clients reconnect with
    connection.js's backoff and jitter and resume. Figures relative to the moment the new
    server first answered GET /healthz."""
    import signal

    cpus = harness.available_cpus()
    server_cpus = {cpus[0]} if len(cpus) > 1 else None
    gen_cpus = {cpus[1]} if len(cpus) > 1 else None
    port = harness.free_port()
    db = str(workdir / "herd.sqlite3")
    clients = args.herd_clients
    cmd = server_command(
        "real",
        args.herd_mode,
        port,
        args.interval,
        args.real_args.split(),
        db=db,
        max_connections=clients + 100,
    )
    if args.herd_history:
        fill_database(cmd, port, server_cpus, workdir, args.herd_history, args.ready_timeout)
    old = harness.ServerProcess("herd-old", cmd, port, server_cpus, workdir / "herd-old.log")
    new = None
    gens: list[harness.GeneratorProcess] = []
    try:
        old.wait_ready(args.ready_timeout)
        time.sleep(SERVER_SETTLE)
        procs = max(1, min(args.procs_big, clients))
        for i in range(procs):
            share = clients // procs + (1 if i < clients % procs else 0)
            gens.append(
                harness.GeneratorProcess(
                    port,
                    share,
                    gen_cpus,
                    workdir / f"herd-{i}.f64",
                    [*generator_args(args, procs, i, 0), "--reconnect",
                     "--resume-with", args.herd_resume_with],
                )
            )
        ramp_timeout = args.connect_timeout * (clients / args.batch + 2) + 60
        ramped = [g.read("ramped", ramp_timeout) for g in gens]
        connected = sum(r["connected"] for r in ramped)
        time.sleep(args.herd_settle)
        rss_before = old.rss()
        until = time.time() + args.herd_settle + 10 + args.herd_wait + 30
        for g in gens:
            g.proc.stdin.write(f"herd {until!r}\n")
            g.proc.stdin.flush()
        time.sleep(args.herd_settle)  # readings before the restart, for the tick schedule
        t_term = time.time()
        old.proc.send_signal(signal.SIGTERM)
        old.proc.wait(30)
        t_exit = time.time()
        old.log.close()
        harness.stop(old.proc)
        new = harness.ServerProcess("herd-new", cmd, port, server_cpus, workdir / "herd-new.log")
        tracer = HerdTrace(new, gens, port, t_term) if args.herd_trace else None
        new.wait_ready(args.ready_timeout, poll=0.02)
        t_ready = time.time()
        cpu0 = new.cpu_seconds()
        # RSS through the herd, every 0.5 s, then once the clients are back
        rss_samples = []
        while time.time() < t_ready + args.herd_wait:
            rss_samples.append(new.rss())
            time.sleep(0.5)
        cpu_herd = new.cpu_seconds() - cpu0
        time.sleep(args.herd_settle)
        rss_after = new.rss()
        for g in gens:
            g.proc.stdin.write("report\n")
            g.proc.stdin.flush()
        reports = [g.read("herd", 60) for g in gens]
        if tracer is not None:
            tracer.stop()
            tracer.print(t_ready)
        log_lines = (workdir / "herd-new.log").read_text(errors="replace").splitlines()
    finally:
        for g in gens:
            g.stop()
        if new is not None:
            new.stop()
        if old.proc.poll() is None:
            old.stop()

    done = sorted(t - t_ready for r in reports for t in r["done_at"])
    joined = sorted(t - t_ready for r in reports for t in r["joined_at"])
    seq_ts: dict[int, float] = {}
    for r in reports:
        for k, ts in r["seq_ts"].items():
            seq_ts[int(k)] = ts
    before = sorted(s for s, ts in seq_ts.items() if ts < t_exit)
    after = sorted(s for s, ts in seq_ts.items() if ts > t_exit)
    gaps_after = [
        (seq_ts[b] - seq_ts[a]) / (b - a) for a, b in zip(after, after[1:])
    ]
    gaps_before = [
        (seq_ts[b] - seq_ts[a]) / (b - a) for a, b in zip(before, before[1:])
    ]
    missing_seqs = 0
    if before and after:
        missing_seqs = after[0] - before[-1] - 1
    holes = sum(r["holes"] for r in reports)
    within = sum(1 for t in done if t <= args.herd_goal)
    lost = sum(r["lost"] for r in reports)
    refusals = [line for line in log_lines if "busy" in line or "refus" in line.lower()]
    return {
        "clients": clients,
        "connected_before": connected,
        "ramp_errors": merge_counts(r["errors"] for r in ramped),
        "lost": lost,
        "shutdown_s": t_exit - t_term,
        "restart_s": t_ready - t_exit,
        "joined": len(joined),
        "joined_p50_s": percentile(joined, 50),
        "joined_p99_s": percentile(joined, 99),
        "joined_max_s": joined[-1] if joined else math.nan,
        "gap_free": len(done),
        "gap_free_within_goal": within,
        "gap_free_p50_s": percentile(done, 50),
        "gap_free_p99_s": percentile(done, 99),
        "gap_free_max_s": done[-1] if done else math.nan,
        "not_gap_free": sum(r["not_done"] for r in reports),
        "holes": holes,
        "resumed": sum(r["resumed"] for r in reports),
        "connected_at_report": sum(r["connected"] for r in reports),
        "attempts": sum(r["attempts"] for r in reports),
        "attempt_errors": merge_counts(r["attempt_errors"] for r in reports),
        "error_events": merge_counts(r["error_events"] for r in reports),
        "seq_jump_across_restart": missing_seqs,
        "tick_gap_max_before_ms": max(gaps_before, default=math.nan) * 1e3,
        "tick_gap_max_after_ms": max(gaps_after, default=math.nan) * 1e3,
        "ticks_after": len(after),
        "latency_p99_ms": max((r["latencies"].get("p99", math.nan) for r in reports),
                              default=math.nan),
        "latency_max_ms": max((r["latencies"].get("max", math.nan) for r in reports),
                              default=math.nan),
        "rss_before_mb": rss_before / 2**20,
        "rss_peak_herd_mb": max(rss_samples, default=0) / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "server_cpu_herd_pct": cpu_herd / args.herd_wait * 100,
        "server_log_refusals": refusals[:5],
        "goal_s": args.herd_goal,
        "resume_with": "CONNECT's auth" if args.herd_resume_with == "connect" else "resume event",
        "mode": args.herd_mode,
        "history_before": args.herd_history,
    }


def fill_database(cmd: list[str], port: int, cpus, workdir: Path, readings: int,
                  timeout: float) -> None:
    """Run the herd's server on its database at 100 readings a second until it holds
    `readings`: the herd then restarts a server that has a full history to send."""
    import json
    import urllib.error
    import urllib.request

    fast = list(cmd)
    fast[fast.index("--interval") + 1] = "0.01"
    filler = harness.ServerProcess("herd-fill", fast, port, cpus, workdir / "herd-fill.log")
    try:
        filler.wait_ready(timeout)
        deadline = time.time() + readings / 50 + 30
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/latest", timeout=5) as r:
                    if json.load(r)["seq"] >= readings:
                        break
            except urllib.error.HTTPError:  # 404 until the first reading
                pass
            time.sleep(0.2)
    finally:
        filler.stop()


class HerdTrace:
    """--herd-trace: every 0.5 s, the new server's and the generators' CPU, the server's
    established connections and the kernel's listen-queue overflows (nstat)."""

    def __init__(self, server, gens, port: int, t0: float) -> None:
        import threading

        self.server, self.gens, self.port, self.t0 = server, gens, port, t0
        self.rows: list[tuple] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    @staticmethod
    def overflows() -> int:
        try:
            out = subprocess.run(
                ["nstat", "-az", "TcpExtListenOverflows"], capture_output=True, text=True
            ).stdout.split()
            return int(out[out.index("TcpExtListenOverflows") + 1])
        except (OSError, ValueError, IndexError):
            return -1

    def established(self) -> int:
        out = subprocess.run(
            ["ss", "-Htn", "state", "established", f"( sport = :{self.port} )"],
            capture_output=True,
            text=True,
        ).stdout
        return out.count("\n")

    def run(self) -> None:
        last = (time.time(), 0.0, sum(g.cpu_seconds() for g in self.gens), self.overflows())
        while not self.done.wait(0.5):
            try:
                scpu = self.server.cpu_seconds()
            except Exception:
                scpu = 0.0
            now = (time.time(), scpu, sum(g.cpu_seconds() for g in self.gens), self.overflows())
            dt = now[0] - last[0]
            self.rows.append(
                (
                    now[0],
                    (now[1] - last[1]) / dt * 100 if last[1] else math.nan,
                    (now[2] - last[2]) / dt * 100,
                    now[3] - last[3],
                    self.established(),
                )
            )
            last = now

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)

    def print(self, t_ready: float) -> None:
        print("\nherd trace (t from the new server's first answer):", file=sys.stderr)
        for t, scpu, gcpu, ovf, est in self.rows:
            print(
                f"  t {t - t_ready:+6.1f} s  server CPU {scpu:5.0f}%  generators {gcpu:4.0f}%  "
                f"listen overflows {ovf:6d}  established {est}",
                file=sys.stderr,
            )


def merge_counts(dicts) -> dict:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def print_herd(h: dict, out=sys.stdout) -> None:
    g = h["goal_s"]
    print(f"\nrestart herd ({h['clients']} clients, {h['mode']}, SIGTERM + restart, same port and --db "
          f"holding {h['history_before']} readings):", file=out)
    rows = [
        ("connected before the restart", f"{h['connected_before']} (ramp errors: {h['ramp_errors'] or 0})"),
        ("lost the server (got its close)", f"{h['lost']}"),
        ("old server's shutdown / new server's start", f"{h['shutdown_s']:.2f} s / {h['restart_s']:.2f} s"),
        ("rejoined (from the new server's first answer)", f"{h['joined']}: p50 {h['joined_p50_s']:.2f} s, p99 {h['joined_p99_s']:.2f} s, max {h['joined_max_s']:.2f} s"),
        (f"resumed ({{after: last seq}} in the {h['resume_with']})", f"{h['resumed']}"),
        (f"gap-free within {g:.0f} s", f"{h['gap_free_within_goal']} of {h['lost']}: p50 {h['gap_free_p50_s']:.2f} s, p99 {h['gap_free_p99_s']:.2f} s, max {h['gap_free_max_s']:.2f} s"),
        ("not gap-free at the report / seqs missing", f"{h['not_gap_free']} / {h['holes']}"),
        ("seqs drawn while no client was back (in their snapshots)", f"{h['seq_jump_across_restart']}"),
        ("connect attempts / failures", f"{h['attempts']} / {h['attempt_errors'] or 0}"),
        ("error events to clients (busy, unread)", f"{h['error_events'] or 0}"),
        ("server log refusals", f"{h['server_log_refusals'] or 'none'}"),
        ("max tick gap before / after the restart", f"{h['tick_gap_max_before_ms']:.1f} ms / {h['tick_gap_max_after_ms']:.1f} ms ({h['ticks_after']} ticks after)"),
        ("live reading latency p99 / max in the herd", f"{h['latency_p99_ms']:.0f} ms / {h['latency_max_ms']:.0f} ms"),
        ("server RSS steady before / peak in herd / after", f"{h['rss_before_mb']:.0f} / {h['rss_peak_herd_mb']:.0f} / {h['rss_after_mb']:.0f} MB"),
        ("server CPU in the herd window", f"{h['server_cpu_herd_pct']:.0f}%"),
    ]
    print_markdown(["figure", "value"], [list(r) for r in rows], out)


COLUMNS = [
    # key, header, format, better ("low"/"high"/None): used for the ratio table
    ("connected", "conn", "{:.0f}", "high"),
    ("failed", "fail", "{:.0f}", "low"),
    ("p50_ms", "p50 ms", "{:.1f}", "low"),
    ("p99_ms", "p99 ms", "{:.1f}", "low"),
    ("max_ms", "max ms", "{:.1f}", "low"),
    ("missed", "missed", "{:.0f}", "low"),
    ("period_ms", "period ms", "{:.2f}", None),
    ("drift_pct", "drift %", "{:+.3f}", None),
    ("jitter_p99_ms", "jit99 ms", "{:.2f}", "low"),
    ("arrival_jitter_p99_ms", "arr jit99", "{:.1f}", "low"),
    ("cpu_us_per_msg", "CPU us/msg", "{:.1f}", "low"),
    ("bcast_ms", "bcast ms", "{:.2f}", "low"),
    ("server_cpu_pct", "srv CPU%", "{:.0f}", "low"),
    ("rss_mb", "RSS MB", "{:.0f}", "low"),
    ("kb_per_client", "KB/client", "{:.1f}", "low"),
    ("gen_cpu_pct", "gen CPU%", "{:.0f}", None),
    ("gen_lag_p99_ms", "gen lag99", "{:.0f}", None),
    ("other_cpu_pct", "other%", "{:.0f}", None),
    ("ramp_s", "ramp s", "{:.1f}", None),
    ("viewers_ramp", "viewers/ramp", "{:.0f}", None),
    ("viewers_window", "viewers/win", "{:.0f}", None),
]


SKIP_RATIO = ("period ms", "drift %", "other%", "gen lag99", "ramp s", "viewers/ramp",
              "viewers/win")


def fmt(fmt_: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt_.format(value)


def print_table(rows: list[dict], out=sys.stdout) -> None:
    headers = ["target", "mode", "N"] + [h for _, h, _, _ in COLUMNS]
    lines = [
        [r["target"], r["mode"], str(r["requested"])] + [fmt(f, r.get(k)) for k, _, f, _ in COLUMNS]
        for r in rows
    ]
    print_markdown(headers, lines, out)


def print_ratios(rows: list[dict], out=sys.stdout) -> None:
    by_key = {(r["target"], r["mode"], r["requested"]): r for r in rows}
    headers = ["mode", "N"] + [h for _, h, _, _ in COLUMNS if h not in SKIP_RATIO] + ["note"]
    lines = []
    for (target, mode, n), real in by_key.items():
        naive = by_key.get(("naive", mode, n))
        if target != "real" or naive is None:
            continue
        line = [mode, str(n)]
        for key, header, _, _ in COLUMNS:
            if header in SKIP_RATIO:
                continue
            a, b = real.get(key), naive.get(key)
            if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
                line.append("-" if not (a == 0 and b == 0) else "=")
            else:
                line.append(f"{a / b:.2f}")
        held = naive.get("connected", 0)
        line.append(f"naive held only {held}" if held < real.get("connected", 0) else "")
        lines.append(line)
    if lines:
        print("\nratio real/naive (lower is better except conn):", file=out)
        print_markdown(headers, lines, out)


def print_markdown(headers: list[str], lines: list[list[str]], out) -> None:
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
        for i, h in enumerate(headers)
    ]
    print("| " + " | ".join(h.rjust(w) for h, w in zip(headers, widths)) + " |", file=out)
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|", file=out)
    for line in lines:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(line, widths)) + " |", file=out)


def machine_description() -> str:
    import psutil

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for pkg in ("flask-socketio", "python-socketio", "python-engineio", "eventlet", "gevent"):
        try:
            from importlib.metadata import version

            versions.append(f"{pkg} {version(pkg)}")
        except Exception:
            pass
    return (
        f"{model}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
        + ", ".join(versions)
    )


def code_version(ref: str = "") -> str:
    """The commit benchmarked; without ``ref``, marked dirty when the working tree differs."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", ref or "HEAD"],
            cwd=harness.ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if ref:
            return rev or ref
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=harness.ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return f"{rev}{' (dirty)' if dirty else ''}" if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        default="matrix,big,herd,peers",
        help="parts to run, comma-separated: matrix (--modes x --clients x --targets), "
        "big (eventlet, --big-clients), herd (restart herd), peers (this server, the naive app, "
        "Node socket.io, python-socketio on uvicorn at --peer-clients), hosts (random_stream.py "
        "vs gunicorn -k gevent, 1 and 2 workers, at --host-clients)",
    )
    p.add_argument(
        "--clients",
        default="1000,10000",
        help="matrix: comma-separated client counts (max 10000)",
    )
    p.add_argument(
        "--big-clients",
        type=int,
        default=19500,
        help="big: clients on one eventlet server (max 19500: the fd hard limit here is 20,000)",
    )
    p.add_argument(
        "--procs-big",
        type=int,
        default=2,
        help="big and herd: load generator processes (each has its own fd limit)",
    )
    p.add_argument(
        "--sources",
        type=int,
        default=4,
        help="big: 127.0.0.x source addresses per generator process",
    )
    p.add_argument("--herd-clients", type=int, default=10000)
    p.add_argument(
        "--herd-goal", type=float, default=10.0, help="herd: seconds to be back and gap-free"
    )
    p.add_argument(
        "--herd-wait",
        type=float,
        default=20.0,
        help="herd: seconds after the new server answers before the clients report",
    )
    p.add_argument("--herd-settle", type=float, default=5.0)
    p.add_argument(
        "--herd-history",
        type=int,
        default=900,
        help="herd: readings in the database before the clients connect (900, the default "
        "--history: a server that has run for 15 minutes, so each snapshot is a full one)",
    )
    p.add_argument("--herd-mode", choices=("eventlet", "gevent"), default="eventlet",
                   help="herd: the server's async mode")
    p.add_argument(
        "--herd-resume-with",
        choices=("connect", "event"),
        default="connect",
        help="herd: clients say what they hold in the CONNECT's auth (as static/js/sync.js) or "
        "send `resume` once joined (the way before)",
    )
    p.add_argument(
        "--herd-trace", action="store_true", help="herd: print CPU, connections, overflows per 0.5 s"
    )
    p.add_argument(
        "--peer-clients", default="1000,10000", help="peers: comma-separated client counts"
    )
    p.add_argument(
        "--host-clients", default="1000,10000", help="hosts: comma-separated client counts"
    )
    p.add_argument(
        "--host-targets",
        default="real,gunicorn,gunicorn2",
        help="hosts: real (random_stream.py), gunicorn (-k gevent -w 1), gunicorn2 (-w 2, "
        "--message-queue), gunicorn2r (the same with --reuse-port); --host-big-clients runs "
        "on the first two-worker one named",
    )
    p.add_argument("--host-args", default="", help="extra arguments for gunicorn")
    p.add_argument(
        "--host-big-clients",
        type=int,
        default=30000,
        help="hosts: clients on the two gunicorn workers at the end (0: none; at most 36,000: "
        "18,000 a worker)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=25.0,
        help="measuring window, seconds (25 = one Engine.IO ping interval, so ping cost is in)",
    )
    p.add_argument(
        "--modes", default="eventlet,gevent", help="async modes: eventlet, gevent, threading"
    )
    p.add_argument(
        "--targets",
        default="real,naive",
        help="real (random_stream.py), naive (bench/naive_app.py)",
    )
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument(
        "--grace",
        type=float,
        default=3.0,
        help="seconds to wait for late readings after the window",
    )
    p.add_argument("--batch", type=int, default=500, help="connections opened per ramp step")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument(
        "--procs", type=int, default=1, help="load generator processes (all on the generator CPU)"
    )
    p.add_argument("--ready-timeout", type=float, default=30.0)
    p.add_argument("--real-args", default="", help="extra arguments for random_stream.py")
    p.add_argument(
        "--ref",
        default="",
        help="benchmark random_stream.py as of this commit (e.g. HEAD) instead of the working tree",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of servers and generators (e.g. -10 on a busy machine; negative needs root)",
    )
    p.add_argument("--json", default="", help="also write all figures to this JSON file")
    p.add_argument(
        "--profile",
        default="",
        help="sample each server with py-spy into this folder "
        "(collapsed stacks, one file per run; needs `pip install py-spy` and ptrace rights)",
    )
    args = p.parse_args(argv)
    args.parts = [x for x in args.only.split(",") if x]
    unknown = set(args.parts) - {"matrix", "big", "herd", "peers", "hosts"}
    if unknown:
        p.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}")
    args.client_counts = [int(c) for c in args.clients.split(",") if c]
    args.peer_counts = [int(c) for c in args.peer_clients.split(",") if c]
    args.host_counts = [int(c) for c in args.host_clients.split(",") if c]
    args.host_target_list = [t for t in args.host_targets.split(",") if t]
    if set(args.host_target_list) - set(HOST_LABELS):
        p.error(f"--host-targets: each one of {', '.join(HOST_LABELS)}")
    if any(n < 1 or n > 10000 for n in args.host_counts):
        p.error("--host-clients: each count must be in 1..10000")
    if not 0 <= args.host_big_clients <= 2 * MAX_WORKER_CONNECTIONS:
        p.error(f"--host-big-clients must be in 0..{2 * MAX_WORKER_CONNECTIONS}")
    if any(n < 1 or n > 10000 for n in args.client_counts + args.peer_counts):
        p.error("--clients, --peer-clients: each count must be in 1..10000")
    if not 1 <= args.big_clients <= 19500:
        p.error("--big-clients must be in 1..19500")
    if not 1 <= args.herd_clients <= 10000:
        p.error("--herd-clients must be in 1..10000")
    args.mode_list = [m for m in args.modes.split(",") if m]
    args.target_list = [t for t in args.targets.split(",") if t]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    harness.raise_fd_limit()
    harness.NICE = args.nice
    global REAL_ROOT
    if args.ref:
        REAL_ROOT = export_ref(args.ref)
    if "real" in args.target_list and not (REAL_ROOT / "random_stream.py").exists():
        print("random_stream.py not found: benchmarking the naive reference only", file=sys.stderr)
        args.target_list = [t for t in args.target_list if t != "real"]
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"# bench/run.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    code = code_version(args.ref) if args.ref else code_version()
    print(f"# {started:%Y-%m-%d %H:%M} UTC; code {code}; {machine_description()}")
    print(
        f"# server pinned to CPU {harness.available_cpus()[0]}, load generator to CPU "
        f"{harness.available_cpus()[-1]}; logs in {workdir}",
        flush=True,
    )
    rows: list[dict] = []  # matrix and big
    peer_rows: list[dict] = []
    host_rows: list[dict] = []
    herd: dict | None = None
    done: dict[tuple, dict] = {}  # (target, mode, N) -> row: the peers reuse the matrix's

    def measure(target: str, mode: str, n: int, **kw) -> dict | None:
        key = (target, mode, n)
        if key in done and not kw:
            return done[key]
        label = f"{target} {mode} N={n}"
        print(f"... {label}", file=sys.stderr, flush=True)
        try:
            row = run_one(target, mode, n, args, workdir, **kw)
        except RuntimeError as exc:
            print(f"!!! {label}: {exc}", file=sys.stderr, flush=True)
            return None
        print(
            f"    connected {row['connected']}/{n}, p99 {row['p99_ms']:.0f} ms, missed {row['missed']}, "
            f"{row['cpu_us_per_msg']:.1f} us/msg, {row['kb_per_client']:.1f} KB/client, "
            f"gen CPU {row['gen_cpu_pct']:.0f}%, other load on the server CPU {row['other_cpu_pct']:.0f}%",
            file=sys.stderr,
            flush=True,
        )
        if not kw:
            done[key] = row
        return row

    try:
        if "matrix" in args.parts:
            for n in args.client_counts:
                for mode in args.mode_list:
                    for target in args.target_list:
                        if target == "naive" and mode == "threading":
                            continue
                        if (row := measure(target, mode, n)) is not None:
                            rows.append(row)
        if "big" in args.parts and "real" in args.target_list:
            # Server: one fd a client plus the listener, the database and a reserve, under
            # the hard limit of 20,000; each generator process has its own limit.
            row = measure(
                "real",
                "eventlet",
                args.big_clients,
                procs=args.procs_big,
                sources=args.sources,
                # 19,600 sessions leave 20,000 - 19,600 - 64 = 336 descriptors for
                # connections waiting for their request: fewer connects in flight than that.
                concurrency=120,
            )
            if row is not None:
                rows.append(row)
        if "herd" in args.parts:
            print(f"... restart herd N={args.herd_clients}", file=sys.stderr, flush=True)
            try:
                herd = run_herd(args, workdir)
            except RuntimeError as exc:
                print(f"!!! herd: {exc}", file=sys.stderr, flush=True)
        if "peers" in args.parts:
            skip = ensure_node_peer()
            if skip:
                print(f"!!! Node peer skipped: {skip}", file=sys.stderr, flush=True)
            for n in args.peer_counts:
                for target in ("real", "naive", "node", "asgi"):
                    if target == "node" and skip:
                        continue
                    mode = "eventlet" if target in ("real", "naive") else "-"
                    if (row := measure(target, mode, n)) is not None:
                        peer_rows.append(row)
        if "hosts" in args.parts:
            host_rows = run_hosts(args, workdir, measure)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping servers", file=sys.stderr)
    finally:
        harness.stop_all()
    print()
    if rows:
        print_table(rows)
        print_ratios(rows)
    if herd is not None:
        print_herd(herd)
    if peer_rows:
        print_peers(peer_rows)
    if host_rows:
        print_hosts(host_rows)
    every = rows + peer_rows + host_rows
    busy = [r for r in every if r.get("other_cpu_pct", 0) > 10]
    if busy:
        print(
            f"\nWARNING: in {len(busy)} of {len(every)} runs other programs used more than 10% of the server's "
            "CPU (column other%): latency, jitter and drift there are pessimistic; rerun on a quiet machine."
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "started": started.isoformat(),
                    "args": vars(args),
                    "rows": rows,
                    "herd": herd,
                    "peers": peer_rows,
                    "hosts": host_rows,
                },
                indent=1,
            )
        )
    return 0 if rows or herd or peer_rows or host_rows else 1


PEER_COLUMNS = [
    ("connected", "conn", "{:.0f}"),
    ("p50_ms", "p50 ms", "{:.1f}"),
    ("p99_ms", "p99 ms", "{:.1f}"),
    ("missed", "missed", "{:.0f}"),
    ("period_ms", "period ms", "{:.2f}"),
    ("jitter_p99_ms", "jit99 ms", "{:.2f}"),
    ("cpu_us_per_msg", "CPU us/msg", "{:.1f}"),
    ("server_cpu_pct", "srv CPU%", "{:.0f}"),
    ("rss_mb", "RSS MB", "{:.0f}"),
    ("kb_per_client", "KB/client", "{:.1f}"),
    ("other_cpu_pct", "other%", "{:.0f}"),
]
PEER_RATIOS = [("cpu_us_per_msg", "CPU us/msg"), ("p99_ms", "p99"), ("rss_mb", "RSS"),
               ("kb_per_client", "KB/client")]


def print_peers(rows: list[dict], out=sys.stdout) -> None:
    """The four servers side by side, and each one's figures over this server's (x real)."""
    print("\npeers (each server on one CPU, the same load generator on the other):", file=out)
    headers = ["server", "N"] + [h for _, h, _ in PEER_COLUMNS] + [
        f"{h} x real" for _, h in PEER_RATIOS
    ]
    real = {r["requested"]: r for r in rows if r["target"] == "real"}
    lines = []
    for r in rows:
        line = [PEER_LABELS[r["target"]], str(r["requested"])]
        line += [fmt(f, r.get(k)) for k, _, f in PEER_COLUMNS]
        base = real.get(r["requested"])
        for k, _ in PEER_RATIOS:
            a, b = r.get(k), base.get(k) if base else None
            ok = a is not None and b and not (math.isnan(a) or math.isnan(b))
            line.append(f"{a / b:.2f}" if ok else "-")
        if r["connected"] < r["requested"]:
            line[1] += f" (held {r['connected']})"
        lines.append(line)
    print_markdown(headers, lines, out)


def print_hosts(rows: list[dict], out=sys.stdout) -> None:
    """random_stream.py and gunicorn side by side, each over random_stream.py (x real)."""
    print("\nhosts (one process pinned to one CPU, the generator on the other; the two "
          "workers, their generators and Redis share both):", file=out)
    headers = ["host", "N"] + [h for _, h, _ in PEER_COLUMNS] + ["per worker"] + [
        f"{h} x real" for _, h in PEER_RATIOS
    ]
    real = {r["requested"]: r for r in rows if r["target"] == "real"}
    lines = []
    for r in rows:
        line = [HOST_LABELS[r["target"]], str(r["requested"])]
        line += [fmt(f, r.get(k)) for k, _, f in PEER_COLUMNS]
        line.append("/".join(str(n) for n in r.get("spread", [])) or "-")
        base = real.get(r["requested"])
        for k, _ in PEER_RATIOS:
            a, b = r.get(k), base.get(k) if base else None
            ok = a is not None and b and not (math.isnan(a) or math.isnan(b))
            line.append(f"{a / b:.2f}" if ok else "-")
        if r["connected"] < r["requested"]:
            line[1] += f" (held {r['connected']})"
        lines.append(line)
    print_markdown(headers, lines, out)


if __name__ == "__main__":
    sys.exit(main())
