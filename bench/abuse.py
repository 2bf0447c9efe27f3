"""Floods against a real server, with a well-behaved watcher's view of them.

    .venv/bin/python bench/abuse.py                 # every scenario
    .venv/bin/python bench/abuse.py silent fd       # some of them
    .venv/bin/python bench/abuse.py --root /tmp/old # another checkout's random_stream.py

Each scenario starts `random_stream.py --db :memory: --interval 1` on a free 127.0.0.1
port, connects one python-socketio watcher over WebSocket and a /healthz prober, runs its
flood for a bounded time and count, lets the attackers go, and prints: the watcher's
largest gap between readings (in intervals), readings it missed, whether /healthz kept
answering 200 (within 2 s), the server's RSS before/peak/after and CPU during the flood,
and whether the process survived. Loopback only; attackers that must look like another
client bind 127.0.0.2.

Scenarios are functions in SCENARIOS: add one with @scenario("name", server args...).
The protocol floods (binary attachments, resume, control traffic: bench/abuse_protocol.py,
which also runs alone) run from here too, by name.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import abuse_protocol  # noqa: E402  (bench/ is no package)

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 1.0  # the default: a stall of a few hundred ms on a busy machine is no gap
ATTACKER = "127.0.0.2"  # another "address" on loopback, for per-address limits


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


def get(port: int, path: str, timeout: float = 2.0) -> int | None:
    """The status of one GET on a fresh connection, or None if none came in time."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
            return int(head.split()[1]) if head.startswith(b"HTTP/") else None
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Server:
    root: Path
    args: list[str]
    fd_limit: int | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        limit = self.fd_limit

        def setup() -> None:
            if limit:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.log = open(f"/tmp/abuse-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(self.root / "random_stream.py"), "--host", "127.0.0.1",
             "--port", str(self.port), "--db", ":memory:", "--interval", str(INTERVAL),
             *self.args],
            cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=setup,
        )
        deadline = time.monotonic() + 20
        while get(self.port, "/healthz") != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"server did not start; see {self.log.name}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Watcher:
    """One python-socketio client over WebSocket: when each reading arrived."""

    def __init__(self, port: int) -> None:
        import socketio

        self.arrivals: list[tuple[int, float]] = []
        self.client = socketio.Client(reconnection=False)
        self.client.on("random_number", lambda r: self.arrivals.append((r["seq"], time.monotonic())))
        self.client.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=10)

    def window(self, start: float, end: float) -> tuple[float, int]:
        """(largest gap in intervals, readings missed) between two moments."""
        got = [(s, t) for s, t in self.arrivals if start <= t <= end]
        expected = int((end - start) / INTERVAL)
        if len(got) < 2:  # the watcher lost its stream
            return float("inf"), expected
        # Silence after the last reading counts as a gap too (the stream may have stopped).
        times = [t for _, t in got] + [end]
        gap = max(b - a for a, b in zip(times, times[1:])) / INTERVAL
        holes = sum(b[0] - a[0] - 1 for a, b in zip(got, got[1:]))
        return gap, max(holes, expected - len(got) - 2)

    def close(self) -> None:
        try:
            self.client.disconnect()
        except Exception:
            pass


class Prober(threading.Thread):
    """GET /healthz every 0.5 s; counts answers that were 200 within 2 s."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.ok, self.total, self.running = port, 0, 0, True
        self.slowest = 0.0  # seconds, of the answered ones

    def run(self) -> None:
        while self.running:
            self.total += 1
            started = time.monotonic()
            if get(self.port, "/healthz") == 200:
                self.ok += 1
                self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(0.5)


SCENARIOS: dict[str, tuple] = {}


def scenario(name: str, *server_args: str, fd_limit: int | None = None):
    """Register flood(port, report) -> None; it must end by itself within seconds."""
    def register(flood):
        SCENARIOS[name] = (flood, list(server_args), fd_limit)
        return flood
    return register


def open_idle(port: int, count: int, payload: bytes = b"", source: str | None = None) -> list:
    socks = []
    for _ in range(count):
        try:
            s = socket.socket()
            if source:
                s.bind((source, 0))
            s.settimeout(2)
            s.connect(("127.0.0.1", port))
            if payload:
                s.sendall(payload)
            socks.append(s)
        except OSError:
            s.close()
            break
    return socks


@scenario("fd", "--max-connections", "100", fd_limit=150)
def flood_fd(port: int, report: dict) -> None:
    """1: idle TCP connections past the descriptor limit (ulimit -n 150, 100 sessions)."""
    socks = open_idle(port, 400, source=ATTACKER)
    report["attacker sockets"] = len(socks)
    time.sleep(8)
    for s in socks:
        s.close()


@scenario("silent", "--max-connections", "100")
def flood_silent(port: int, report: dict) -> None:
    """2: silent, half-sent and idle keep-alive sockets; new ones replace those let go."""
    socks: list = []
    deadline = time.monotonic() + 10
    half = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    opened = 0
    while time.monotonic() < deadline and opened < 6000:
        batch = open_idle(port, 500, half if opened % 1000 else b"", source=ATTACKER)
        opened += len(batch)
        socks += batch
        time.sleep(1)
    report["attacker sockets"] = opened
    for s in socks:
        s.close()


@scenario("handshakes", "--max-connections", "200")
def flood_handshakes(port: int, report: dict) -> None:
    """5: one address opens Engine.IO handshakes as fast as it can, joins none."""
    counts = {"ok": 0, "refused": 0, "failed": 0}
    stop = time.monotonic() + 10

    def attacker() -> None:
        while time.monotonic() < stop and sum(counts.values()) < 20000:
            try:
                with socket.socket() as s:
                    s.bind((ATTACKER, 0))
                    s.settimeout(2)
                    s.connect(("127.0.0.1", port))
                    s.sendall(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n"
                              b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
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


def run(name: str, root: Path) -> dict:
    flood, args, fd_limit = SCENARIOS[name]
    server = Server(root, args, fd_limit)
    server.start()
    pid = server.proc.pid
    watcher = Watcher(server.port)
    prober = Prober(server.port)
    prober.start()
    time.sleep(2)
    report: dict = {"scenario": name, "rss before MB": round(rss_mb(pid), 1)}
    peak = [rss_mb(pid)]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.5):
            peak.append(rss_mb(pid))

    threading.Thread(target=sample, daemon=True).start()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    try:
        flood(server.port, report)
    finally:
        t1, cpu1 = time.monotonic(), cpu_seconds(pid)
        time.sleep(4)  # the attackers have left
        sampling.set()
        prober.running = False
        t2 = time.monotonic()
        gap, missed = watcher.window(t0, t2)
        report.update({
            "rss peak MB": round(max(peak), 1), "rss after MB": round(rss_mb(pid), 1),
            "cpu % during": round(100 * (cpu1 - cpu0) / (t1 - t0)),
            "watcher max gap (intervals)": round(gap, 1), "watcher missed": missed,
            "healthz 200": f"{prober.ok}/{prober.total}",
            "healthz slowest ms": round(1000 * prober.slowest),
            "survived": server.proc.poll() is None,
            "healthz after": get(server.port, "/healthz"),
        })
        watcher.close()
        server.stop()
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [*SCENARIOS, *abuse_protocol.SCENARIOS]
    p.add_argument("scenarios", nargs="*", help=f"any of {', '.join(names)} (default all)")
    p.add_argument("--root", type=Path, default=ROOT, help="checkout whose random_stream.py runs")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attackers need descriptors
    chosen = args.scenarios or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        p.error(f"unknown scenario {unknown[0]}; choose from {', '.join(names)}")
    for name in [n for n in chosen if n in SCENARIOS]:
        report = run(name, args.root)
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in report.items() if k != "scenario"),
              flush=True)
    protocol = [n for n in chosen if n in abuse_protocol.SCENARIOS]
    if protocol:
        abuse_protocol.run(args.root, protocol)


if __name__ == "__main__":
    main()
