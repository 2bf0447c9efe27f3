"""Floods against a real server, with a well-behaved watcher's view of them.

    .venv/bin/python bench/abuse.py                    # every scenario
    .venv/bin/python bench/abuse.py rudy slowloris     # some of them
    .venv/bin/python bench/abuse.py slowloris --runs 4 --async-mode gevent --json out.json
    .venv/bin/python bench/abuse.py --root /tmp/old    # another checkout's random_stream.py

Each scenario starts `random_stream.py --db :memory: --interval 1` (or a copy of a store
prefilled with 1,000 readings) on a free 127.0.0.1 port, in the async mode asked for. Per
run (--runs N: N runs back to back against the same server) it connects one
python-socketio watcher over WebSocket and a /healthz prober (a GET every 0.5 s on a fresh
connection, 5 s timeout), runs its flood for a bounded time and count, lets the attackers
go, then polls the server's open descriptors every 0.5 s until they are back within 20 of
what they were before (for up to 90 s, --release-wait), waits 3 s more and prints:
- /healthz: slowest and p99 answer (ms), probes over 200 ms, probes failed (not a 200);
- the watcher: readings missed, whether its seqs stayed consecutive, how late a reading
  arrived (its arrival wall time minus its `ts`: one machine, one clock; max and p99 ms),
  the largest gap between readings (s), disconnects;
- descriptors before / peak / after, and the seconds until back within 20 (">90": never);
- RSS before / peak / after (MB) and after/before; CPU during the flood; the server's log
  lines during the run (its warnings shown); survived.
A one-row-per-run table ends the output; --json FILE saves every figure. Loopback only;
attackers that must look like other clients bind 127.0.0.2 or 127.0.1.x.

Scenarios are functions in SCENARIOS: add one with @scenario("name", server args...); the
flood gets the Server (port, pid) and a dict for its own figures, and must end by itself.
The attackers live in bench/abuse_clients.py. The protocol floods (binary attachments,
resume, control traffic: bench/abuse_protocol.py, which also runs alone) run from here
too, by name, with their own figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import abuse_clients as clients  # noqa: E402  (bench/ is no package)
import abuse_protocol  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 1.0  # the default: a stall of a few hundred ms on a busy machine is no gap
ATTACKER = "127.0.0.2"  # another "address" on loopback, for per-address limits
PROBE_EVERY, PROBE_TIMEOUT, SLOW_MS = 0.5, 5.0, 200
FD_MARGIN, RELEASE_WAIT, SETTLE = 20, 90.0, 3.0  # descriptors "back" within 20, polled 90 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int | None, bytes]:
    """(status, body) of one GET on a fresh connection; status None if none came in time."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            return (int(head.split()[1]) if head.startswith(b"HTTP/") else None), body
    except (OSError, ValueError, IndexError):
        return None, b""


def get(port: int, path: str, timeout: float = 2.0) -> int | None:
    return http_get(port, path, timeout)[0]


def whole(x: float) -> int | None:
    """round(x), or None for NaN (nothing measured)."""
    return None if x != x else round(x)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q / 100))]


@dataclass
class Server:
    root: Path
    args: list[str]
    fd_limit: int | None = None
    db: str = ":memory:"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> None:
        limit = self.fd_limit

        def setup() -> None:
            if limit:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.log = open(f"/tmp/abuse-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(self.root / "random_stream.py"), "--host", "127.0.0.1",
             "--port", str(self.port), "--db", self.db, "--interval", str(INTERVAL),
             *self.args],
            cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=setup,
        )
        deadline = time.monotonic() + 30
        while get(self.port, "/healthz") != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"server did not start; see {self.log.name}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def prefill(root: Path, workdir: Path, count: int) -> Path:
    """A store holding `count` readings (drawn at 100 a second), made once per invocation."""
    db = workdir / f"prefilled-{count}.sqlite3"
    if not db.exists():
        server = Server(root, ["--interval", "0.01"], db=str(db))  # after --interval 1: wins
        server.start()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                status, body = http_get(server.port, "/api/latest", 5)
                if status == 200 and json.loads(body)["seq"] >= count:
                    break
                time.sleep(0.5)
        finally:
            server.stop()
    return db


class Watcher:
    """One python-socketio client over WebSocket: when each reading arrived."""

    def __init__(self, port: int) -> None:
        import socketio

        self.arrivals: list[tuple[int, float, float, float]] = []  # seq, ts, wall, monotonic
        self.disconnects = 0
        self.client = socketio.Client(reconnection=False)
        self.client.on("random_number", lambda r: self.arrivals.append(
            (r["seq"], r["ts"], time.time(), time.monotonic())))
        self.client.on("disconnect", self._lost)
        self.client.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=10)

    def _lost(self, *args) -> None:
        self.disconnects += 1

    def figures(self, start: float, end: float, last_seq: int | None) -> dict:
        """What it saw of the readings drawn from `start` (monotonic) up to `last_seq`."""
        arrivals = list(self.arrivals)
        before = [a for a in arrivals if a[3] < start]
        since = [a for a in arrivals if a[3] >= start]
        first = before[-1][0] + 1 if before else (since[0][0] if since else None)
        if last_seq is None:
            last_seq = max((a[0] for a in arrivals), default=-1)
        expected = list(range(first, last_seq + 1)) if first is not None else []
        seqs = [a[0] for a in since if a[0] <= last_seq]
        wanted = set(expected)
        got = {a[0]: a for a in since if a[0] in wanted}
        late = [1000 * (a[2] - a[1]) for a in got.values()]
        times = [start, *(a[3] for a in since if a[3] <= end), end]
        return {
            "expected": len(expected), "missed": len(expected) - len(got),
            "consecutive": seqs == expected,
            "late_max_ms": whole(max(late, default=float("nan"))),
            "late_p99_ms": whole(percentile(late, 99)),
            "max_gap_s": round(max(b - a for a, b in zip(times, times[1:])), 2),
            "disconnects": self.disconnects,
        }

    def close(self) -> None:
        try:
            self.client.disconnect()
        except Exception:
            pass


class Prober(threading.Thread):
    """GET /healthz every 0.5 s (start to start), each on a fresh connection, 5 s timeout."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.running = port, True
        self.samples: list[tuple[float, bool]] = []  # ms, answered 200

    def run(self) -> None:
        while self.running:
            started = time.monotonic()
            ok = get(self.port, "/healthz", PROBE_TIMEOUT) == 200
            self.samples.append((1000 * (time.monotonic() - started), ok))
            time.sleep(max(0.0, started + PROBE_EVERY - time.monotonic()))

    def figures(self) -> dict:
        ms = [m for m, _ in self.samples]
        return {"probes": len(ms), "max_ms": whole(max(ms, default=float("nan"))),
                "p99_ms": whole(percentile(ms, 99)),
                "over_200ms": sum(m > SLOW_MS for m in ms),
                "failed": sum(not ok for _, ok in self.samples)}


class Sampler(threading.Thread):
    """The server's RSS and open descriptors every 0.5 s: their peaks."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stopped = pid, threading.Event()
        self.rss_peak, self.fd_peak = rss_mb(pid), fd_count(pid)

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            self.rss_peak = max(self.rss_peak, rss_mb(self.pid))
            self.fd_peak = max(self.fd_peak, fd_count(self.pid))


SCENARIOS: dict[str, tuple] = {}


def scenario(name: str, *server_args: str, fd_limit: int | None = None, prefill: int = 0):
    """Register flood(server, report) -> None; it must end by itself, its sockets closed.
    `prefill`: start from a store holding that many readings (a full history snapshot)."""
    def register(flood):
        SCENARIOS[name] = (flood, list(server_args), fd_limit, prefill)
        return flood
    return register


@scenario("fd", "--max-connections", "100", fd_limit=150)
def flood_fd(server: Server, report: dict) -> None:
    """1: idle TCP connections past the descriptor limit (ulimit -n 150, 100 sessions)."""
    socks = clients.open_many(server.port, 400, source=ATTACKER)
    report["attacker sockets"] = len(socks)
    time.sleep(8)
    clients.close_all(socks)


@scenario("silent", "--max-connections", "100")
def flood_silent(server: Server, report: dict) -> None:
    """2: silent, half-sent and idle keep-alive sockets; new ones replace those let go."""
    socks: list = []
    deadline = time.monotonic() + 10
    half = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    opened = 0
    while time.monotonic() < deadline and opened < 6000:
        batch = clients.open_many(server.port, 500, half if opened % 1000 else b"", ATTACKER)
        opened += len(batch)
        socks += batch
        time.sleep(1)
    report["attacker sockets"] = opened
    clients.close_all(socks)


@scenario("handshakes", "--max-connections", "200")
def flood_handshakes(server: Server, report: dict) -> None:
    """5: one address opens Engine.IO handshakes as fast as it can, joins none."""
    port = server.port
    counts = {"ok": 0, "refused": 0, "failed": 0}
    stop = time.monotonic() + 10

    def attacker() -> None:
        while time.monotonic() < stop and sum(counts.values()) < 20000:
            try:
                with clients.tcp(port, ATTACKER) as s:
                    s.sendall(f"GET {clients.POLL_PATH} HTTP/1.1\r\n"
                              "Host: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                    status = s.recv(64).split()[1]
                counts["ok" if status == b"200" else "refused"] += 1
            except (OSError, IndexError):
                counts["failed"] += 1

    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    # Another client (127.0.0.1) tries to connect, once a second during the flood.
    from socketio import Client

    got_in = tries = 0
    time.sleep(2)
    while time.monotonic() < stop - 1:
        tries += 1
        newcomer = Client(reconnection=False)
        try:
            newcomer.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=3)
            got_in += 1
        except Exception:
            pass
        finally:
            newcomer.disconnect()
        time.sleep(1)
    report["newcomers connected"] = f"{got_in}/{tries}"
    for t in threads:
        t.join()
    report["handshakes ok/refused/failed"] = f"{counts['ok']}/{counts['refused']}/{counts['failed']}"
    report["handshakes/s"] = round(sum(counts.values()) / 10)


RUDY_COUNT, RUDY_HOLD = 1288, 30.0  # 200 sessions + 1,024 waiting + 64: the pool


@scenario("rudy", "--max-connections", "200")
def flood_rudy(server: Server, report: dict) -> None:
    """Slow request bodies (R.U.D.Y.) from one address: 1,288 POSTs with complete headers
    and `Content-Length`, then one body byte every 10 s for 30 s. In turn: a POST of
    60,000 bytes to a joined polling session (within the 64 KiB limit: the server reads
    it), one of 1,000,000 to another (over the limit: refused, and that session closed),
    and one of 1,000,000 to /api/history (a route that takes no body)."""
    sids = [clients.polling_session(server.port, ATTACKER) for _ in range(2)]
    report["polling sessions"] = sum(map(bool, sids))
    kinds = [(f"{clients.POLL_PATH}&sid={sid}", length)
             for sid, length in zip(sids, (60_000, 1_000_000)) if sid]
    kinds.append(("/api/history", 1_000_000))

    def head(i: int) -> bytes:
        path, length = kinds[i % len(kinds)]
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {length}\r\n\r\n").encode()

    socks = clients.open_many(server.port, RUDY_COUNT, head, ATTACKER,
                              deadline=time.monotonic() + 30)
    dribble = clients.Dribble(socks)
    dribble.hold(RUDY_HOLD, 10, b"4")
    report.update(dribble.leave())


@scenario("slowloris")
def flood_slowloris(server: Server, report: dict) -> None:
    """3,000 connections from one address send a request line, then a header line every
    3 s, never the end of the headers; after 20 s they leave (close)."""
    socks = clients.open_many(server.port, 3000, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                              ATTACKER, deadline=time.monotonic() + 30)
    dribble = clients.Dribble(socks)
    dribble.hold(20, 3, b"X-Slow: 1\r\n")
    report.update(dribble.leave())


@scenario("sse-leavers")
def flood_sse_leavers(server: Server, report: dict) -> None:
    """300 SSE readers (GET /api/stream, 10 per address) read their first bytes, then
    close after 3 s."""
    request = b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    srcs = clients.sources(300, 10)
    socks = clients.open_many(server.port, len(srcs), request, srcs.__getitem__,
                              deadline=time.monotonic() + 30)
    read = 0
    for s in socks:
        try:
            s.settimeout(3)
            read += bool(s.recv(4096))
        except OSError:
            pass
    time.sleep(3)
    report.update({"readers": len(socks), "read something": read})
    clients.close_all(socks)


HERD = 5000


@scenario("herd")
def flood_herd(server: Server, report: dict) -> None:
    """5,000 Socket.IO clients over WebSocket (100 per address), all joined; 12 s later all
    dropped at once (no goodbye) and all reconnecting at once with CONNECT auth
    {"after": last seq held}; 5 s later they leave. Resumed: rejoined holding every seq
    since. RSS with the herd in, before the drop and after the rejoin. The herd runs in a
    process of its own (bench/abuse_clients.py herd), so that its CPU does not hold up
    the watcher and the prober here."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(clients.__file__)), "herd", str(server.port), str(HERD)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # each line a step; the herd waits for our answer
            step = json.loads(line)
            report.update(step["figures"])
            report[f"rss herd {step['event']} MB"] = round(rss_mb(server.pid), 1)
            proc.stdin.write("go\n")
            proc.stdin.flush()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


SLOW_READERS, SLOW_HOLD = 300, 50.0  # held past --ping-interval + --ping-timeout (45 s)


@scenario("slow-readers", prefill=1000)
def flood_slow_readers(server: Server, report: dict) -> None:
    """300 WebSocket clients (50 per address, 4 KB receive buffers) open, then all join
    at once, read the start of their history (~43 KB: the store holds 1,000 readings),
    and never read again while the server keeps writing; after 50 s they close. (Whether
    the server let them go shows in its descriptors at the end: a FIN behind unread data
    never reaches the client.)"""
    socks = [s for s in (clients.ws_open(server.port, src, rcvbuf=4096)
                         for src in clients.sources(SLOW_READERS, 50)) if s]
    for s in socks:
        s.sendall(clients.frame(clients.MESSAGE + clients.CONNECT))
    report["stalled readers"] = sum(clients.read_until(s, b"history") for s in socks)
    time.sleep(SLOW_HOLD)
    report["server fds at the end"] = fd_count(server.pid)
    clients.close_all(socks)


def measure(server: Server, name: str, flood, release_wait: float = RELEASE_WAIT) -> dict:
    """One run of `flood` against a running server, with every figure of the docstring."""
    pid = server.pid
    watcher = Watcher(server.port)
    prober = Prober(server.port)
    prober.start()
    time.sleep(2)
    fds_before, rss_before = fd_count(pid), rss_mb(pid)
    log_start = Path(server.log.name).stat().st_size
    sampler = Sampler(pid)
    sampler.start()
    extra: dict = {}
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    try:
        flood(server, extra)
    finally:
        t1, cpu1 = time.monotonic(), cpu_seconds(pid)
        release = None
        while server.proc.poll() is None:
            if fd_count(pid) <= fds_before + FD_MARGIN:
                release = time.monotonic() - t1
                break
            if time.monotonic() - t1 >= release_wait:
                break
            time.sleep(0.5)
        time.sleep(SETTLE)
        fds_after, rss_after = fd_count(pid), rss_mb(pid)
        status, body = http_get(server.port, "/api/latest", PROBE_TIMEOUT)
        last_seq = json.loads(body)["seq"] if status == 200 else None
        end = time.monotonic()
        time.sleep(1.5)  # the newest reading reaches the watcher
        prober.running = False
        sampler.stopped.set()
        prober.join(PROBE_TIMEOUT + 1)
        with open(server.log.name, "rb") as f:
            f.seek(log_start)
            lines = f.read().decode(errors="replace").splitlines()
        report = {
            "scenario": name, "survived": server.proc.poll() is None,
            "healthz": prober.figures(), "watcher": watcher.figures(t0, end, last_seq),
            "fds": {"before": fds_before, "peak": sampler.fd_peak, "after": fds_after,
                    "release_s": None if release is None else round(release, 1)},
            "rss_mb": {"before": round(rss_before, 1), "peak": round(sampler.rss_peak, 1),
                       "after": round(rss_after, 1),
                       "ratio": round(rss_after / rss_before, 2) if rss_before else None},
            "release_wait": release_wait, "flood_s": round(t1 - t0, 1),
            "cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0)),
            "log": {"lines": len(lines), "warnings": [x for x in lines if " WARNING " in x
                                                          or " ERROR " in x][:5]},
            "extra": extra,
        }
        watcher.close()
    return report


def run(name: str, root: Path, mode: str, runs: int, workdir: Path,
        release_wait: float = RELEASE_WAIT) -> list[dict]:
    flood, args, fd_limit, fill = SCENARIOS[name]
    db = ":memory:"
    if fill:
        db = str(workdir / f"{name}.sqlite3")
        shutil.copy(prefill(root, workdir, fill), db)
    server = Server(root, [*args, "--async-mode", mode], fd_limit, db)
    server.start()
    reports = []
    try:
        for i in range(1, runs + 1):
            report = {**measure(server, name, flood, release_wait), "mode": mode, "run": i}
            reports.append(report)
            print_report(report)
            if not report["survived"]:
                break
    finally:
        server.stop()
    return reports


def print_report(r: dict) -> None:
    h, w, f, m = r["healthz"], r["watcher"], r["fds"], r["rss_mb"]
    release = f">{r['release_wait']:g}" if f["release_s"] is None else f["release_s"]
    print(f"{r['scenario']} [{r['mode']}] run {r['run']}: "
          + "".join(f"{k} {v}, " for k, v in r["extra"].items())
          + f"healthz max {h['max_ms']} ms p99 {h['p99_ms']} ms, {h['over_200ms']} over 200 ms,"
          f" {h['failed']} failed of {h['probes']}; watcher missed {w['missed']}/{w['expected']}"
          f" consecutive {w['consecutive']} late max {w['late_max_ms']} p99 {w['late_p99_ms']} ms"
          f" gap {w['max_gap_s']} s drops {w['disconnects']}; fds {f['before']}/{f['peak']}/"
          f"{f['after']} back in {release} s; RSS {m['before']}/{m['peak']}/{m['after']} MB"
          f" x{m['ratio']}; CPU {r['cpu_pct']}% over {r['flood_s']} s;"
          f" {r['log']['lines']} log lines; survived {r['survived']}", flush=True)
    for line in r["log"]["warnings"]:
        print(f"    log: {line[:160]}")


COLUMNS = ("scenario", "mode", "run", "hz max", "hz p99", "hz >200/fail", "missed", "consec",
           "late max", "late p99", "gap s", "fd b/peak/a", "back s", "rss b/peak/a MB",
           "ratio", "cpu%", "log", "alive")


def table(reports: list[dict]) -> str:
    rows = [COLUMNS]
    for r in reports:
        h, w, f, m = r["healthz"], r["watcher"], r["fds"], r["rss_mb"]
        rows.append(tuple(str(v) for v in (
            r["scenario"], r["mode"], r["run"], h["max_ms"], h["p99_ms"],
            f"{h['over_200ms']}/{h['failed']}", w["missed"], "yes" if w["consecutive"] else "no",
            w["late_max_ms"], w["late_p99_ms"], w["max_gap_s"],
            f"{f['before']}/{f['peak']}/{f['after']}",
            f">{r['release_wait']:g}" if f["release_s"] is None else f["release_s"],
            f"{m['before']:.0f}/{m['peak']:.0f}/{m['after']:.0f}", m["ratio"], r["cpu_pct"],
            r["log"]["lines"], "yes" if r["survived"] else "NO")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(n) for c, n in zip(row, widths)).rstrip() for row in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [*SCENARIOS, *abuse_protocol.SCENARIOS]
    p.add_argument("scenarios", nargs="*", help=f"any of {', '.join(names)} (default all)")
    p.add_argument("--root", type=Path, default=ROOT, help="checkout whose random_stream.py runs")
    p.add_argument("--async-mode", default="eventlet", choices=("eventlet", "gevent", "threading"),
                   help="the server's --async-mode (default eventlet)")
    p.add_argument("--runs", type=int, default=1,
                   help="run each scenario N times back to back against the same server")
    p.add_argument("--release-wait", type=float, default=RELEASE_WAIT,
                   help="seconds to wait for the descriptors to come back after each run "
                   f"(default {RELEASE_WAIT:g}; 0: the next run starts at once)")
    p.add_argument("--json", type=Path, help="save every figure here (a list, one per run)")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attackers need descriptors
    chosen = args.scenarios or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        p.error(f"unknown scenario {unknown[0]}; choose from {', '.join(names)}")
    root = args.root.resolve()
    reports: list[dict] = []
    workdir = Path(tempfile.mkdtemp(prefix="abuse-"))
    try:
        for name in [n for n in chosen if n in SCENARIOS]:
            reports += run(name, root, args.async_mode, args.runs, workdir, args.release_wait)
            if args.json:
                args.json.write_text(json.dumps(reports, indent=1))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if reports:
        print("\n" + table(reports), flush=True)
    protocol = [n for n in chosen if n in abuse_protocol.SCENARIOS]
    if protocol:
        abuse_protocol.run(root, protocol)


if __name__ == "__main__":
    main()
