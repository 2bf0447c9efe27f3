"""Protocol-level floods against a real server: does the stream stay whole, memory bounded?

    .venv/bin/python bench/abuse_protocol.py                    # every scenario, this tree
    .venv/bin/python bench/abuse_protocol.py --root /tmp/old    # another checkout's server
    .venv/bin/python bench/abuse_protocol.py --only resume

Starts random_stream.py on 127.0.0.1 (a store prefilled with 1,000 readings, then
--interval 1), a well-behaved python-socketio watcher, and per scenario:
- binary: 50 connections each announce a binary event with a million attachments, then
  send 60 KB binary frames at 10 a second (within the message rate limit) for 10 s;
- resume: 100 and then 200 connections each send 29 resumes at once (inside the rate
  limit's burst), each for a different `after`, and do not read the answers;
- control: 2 connections send pongs, noops and WebSocket pings as fast as they can, 10 s.
Prints per scenario the watcher's largest gap between ticks and the seqs it missed, the
server's RSS before, at most during, and 5 s after the attackers left, and its CPU.
Needs psutil, websocket-client and python-socketio[client] (tests/requirements.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import socketio
import websocket

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 10.0  # seconds over which the server's CPU is measured, from the attack's start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path, db: str, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, str(root / "random_stream.py"), "--host", "127.0.0.1",
             "--port", str(self.port), "--db", db, *args],
            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # The attackers share 127.0.0.1: the per-address limit would stop them first;
            # these floods measure the protocol defences alone.
            env={**os.environ, "RANDOM_STREAM_MAX_PER_ADDRESS": "100000"})
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server did not start")

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Watcher:
    """A client that reads everything; notes when each reading arrived."""

    def __init__(self, url: str) -> None:
        self.seen: list[tuple[float, int]] = []
        self.drops = 0
        self.client = socketio.Client(reconnection=False)
        self.client.on("random_number", lambda r: self.seen.append((time.monotonic(), r["seq"])))
        self.client.on("disconnect", self._dropped)
        self.client.connect(url, transports=["websocket"], wait_timeout=10)

    def _dropped(self, *args) -> None:
        self.drops += 1

    def report(self, since: float) -> tuple[float, int]:
        """Largest gap between ticks after `since`, and seqs missing in between."""
        got = [(t, s) for t, s in self.seen if t >= since]
        if len(got) < 2:
            return float("inf"), -1
        gap = max(b[0] - a[0] for a, b in zip(got, got[1:]))
        missed = sum(b[1] - a[1] - 1 for a, b in zip(got, got[1:]))
        return gap, missed


def attacker(url: str, timeout: float = 10.0) -> websocket.WebSocket:
    ws = websocket.create_connection(
        url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket",
        timeout=timeout, suppress_origin=True)
    ws.recv()  # OPEN
    ws.send("40")
    return ws


def in_threads(n: int, work) -> None:
    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def binary_flood(url: str, stop: threading.Event) -> None:
    chunk = os.urandom(60 * 1024)

    def one(i):
        try:
            ws = attacker(url)
            ws.send('451000000-["resume",{"_placeholder":true,"num":0}]')
            for _ in range(100):  # 10 s at 10 a second
                if stop.is_set():
                    break
                ws.send_binary(chunk)
                time.sleep(0.1)
            ws.close()
        except Exception:
            pass  # refused or closed by the server: what a fixed server does

    in_threads(50, one)


def resume_flood(clients: int):
    def flood(url: str, stop: threading.Event) -> None:
        opened: list = []
        lock = threading.Lock()

        def one(i):
            try:
                ws = attacker(url)
                for _ in range(29):
                    ws.send(f'42["resume",{{"after":{random.randrange(0, 1000)}}}]')
                with lock:
                    opened.append(ws)
            except Exception:
                pass

        in_threads(clients, one)
        stop.wait(8)  # answers pile up unread meanwhile
        for ws in opened:
            try:
                ws.close()
            except Exception:
                pass

    return flood


def masked(opcode: int, payload: bytes) -> bytes:
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload  # a zero mask


# Pongs, noops and WebSocket pings, framed once and written in 30 KB batches.
CONTROL_BATCH = (masked(0x1, b"3") + masked(0x1, b"6") + masked(0x9, b"x")) * 1000


def discard(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def control_flood(url: str, stop: threading.Event) -> None:
    def one(i):
        try:
            ws = attacker(url)
            # Reads what comes back (pongs), so the server never sees a client falling behind.
            threading.Thread(target=discard, args=(ws.sock,), daemon=True).start()
            end = time.monotonic() + 10
            for _ in range(100_000):  # bounded; the 10 s end comes first
                if time.monotonic() > end or stop.is_set():
                    break
                ws.sock.sendall(CONTROL_BATCH)
            ws.close()
        except Exception:
            pass  # closed by the server

    in_threads(2, one)


SCENARIOS = {
    "binary": [("binary attachments, 50 connections", binary_flood)],
    "resume": [("resume 100 x 29", resume_flood(100)), ("resume 200 x 29", resume_flood(200))],
    "control": [("control traffic, 2 connections", control_flood)],
}


def run(root: Path, only: list[str]) -> None:
    tmp = tempfile.mkdtemp(prefix="abuse-protocol-")
    try:
        db = os.path.join(tmp, "readings.sqlite3")
        fill = Server(root, db, "--interval", "0.01")  # 1,000 readings for big resume answers
        while fill_count(fill.url) < 1000:
            time.sleep(0.5)
        fill.stop()
        for kind in only:
            for name, flood in SCENARIOS[kind]:
                server = Server(root, db, "--interval", "1")
                try:
                    scenario(server, name, flood)
                finally:
                    server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fill_count(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/api/latest", timeout=5) as r:
            return json.load(r)["seq"]
    except OSError:  # 404 before the first reading
        return 0


def scenario(server: Server, name: str, flood) -> None:
    watcher = Watcher(server.url)
    time.sleep(3)
    rss_before, cpu_before = server.rss_mb(), server.cpu()
    started = time.monotonic()
    stop = threading.Event()
    peak = [rss_before]

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], server.rss_mb())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    flood(server.url, threading.Event())
    flooded = time.monotonic() - started
    time.sleep(max(0.0, WINDOW - flooded))  # CPU over the same window, however soon it ends
    elapsed = time.monotonic() - started
    cpu = (server.cpu() - cpu_before) / elapsed
    time.sleep(5)
    stop.set()
    sampler.join()
    rss_after = server.rss_mb()
    gap, missed = watcher.report(started)
    drops = watcher.drops
    watcher.client.disconnect()
    print(f"{name:38s} tick gap max {gap:5.2f} s  missed {missed:4d}  drops {drops}  "
          f"RSS {rss_before:.0f} / {peak[0]:.0f} / {rss_after:.0f} MB  "
          f"CPU {cpu * 100:3.0f}% over {elapsed:.0f} s (attack {flooded:.1f} s)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=ROOT, help="checkout whose random_stream.py runs")
    p.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = p.parse_args()
    run(args.root.resolve(), args.only or list(SCENARIOS))


if __name__ == "__main__":
    main()
