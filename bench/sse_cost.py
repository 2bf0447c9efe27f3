"""What one Server-Sent Events client costs the server: memory per client, CPU per message.

Starts ``random_stream.py`` (eventlet unless --async-mode says otherwise) on CPU 0, opens
--clients GET /api/stream connections from this process (asyncio, CPU 1) over loopback,
and measures the server's RSS before and after they connect, and its CPU over --duration
seconds with them attached minus the same window with none::

    .venv/bin/python bench/sse_cost.py --clients 1000 --interval 0.2 --duration 10

Bounded: at most 5,000 clients and 120 s of measuring; every process started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

MARK = b"\nevent: reading\n"


class Counter:
    def __init__(self) -> None:
        self.events = 0
        self.open = 0
        self.failed = 0


async def sse_client(port: int, counter: Counter, stop: asyncio.Event) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        counter.failed += 1
        return
    writer.write(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    counter.open += 1
    tail = b""
    try:
        while not stop.is_set():
            data = await reader.read(65536)
            if not data:
                break
            chunk = tail + data
            counter.events += chunk.count(MARK)
            tail = chunk[-(len(MARK) - 1):]
    except OSError:
        pass
    finally:
        counter.open -= 1
        writer.close()


def healthz(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return json.load(r)


def cpu_over(server, seconds: float) -> float:
    before = server.cpu_seconds()
    time.sleep(seconds)
    return server.cpu_seconds() - before


async def attach(port: int, clients: int, counter: Counter, stop: asyncio.Event) -> list:
    tasks = []
    for i in range(clients):
        tasks.append(asyncio.ensure_future(sse_client(port, counter, stop)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)  # under the listen backlog, as real clients arrive
    return tasks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--async-mode", default="eventlet")
    args = p.parse_args()
    if not 1 <= args.clients <= 5000 or not 1 <= args.duration <= 120:
        p.error("--clients 1..5000, --duration 1..120")
    harness.raise_fd_limit()
    cpus = harness.available_cpus()
    server_cpu = {cpus[0]} if len(cpus) > 1 else None
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[1]})
    port = harness.free_port()
    log = Path(tempfile.mkdtemp(prefix="sse_cost-")) / "server.log"
    cmd = [harness.PYTHON, str(harness.ROOT / "random_stream.py"), "--host", "127.0.0.1",
           "--port", str(port), "--db", ":memory:", "--interval", str(args.interval),
           "--async-mode", args.async_mode, "--max-connections", str(args.clients + 100),
           "--log-level", "WARNING"]
    server = harness.ServerProcess("server", cmd, port, server_cpu, log)
    try:
        server.wait_ready()
        time.sleep(2)
        rss_idle = server.rss()
        cpu_idle = cpu_over(server, args.duration)

        async def measure() -> dict:
            counter, stop = Counter(), asyncio.Event()
            tasks = await attach(port, args.clients, counter, stop)
            deadline = time.monotonic() + 60
            while healthz(port)["sse_clients"] < args.clients:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {healthz(port)['sse_clients']} clients attached")
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)
            rss_with = server.rss()
            events_before, cpu_before, t0 = counter.events, server.cpu_seconds(), time.monotonic()
            await asyncio.sleep(args.duration)
            cpu_with = server.cpu_seconds() - cpu_before
            elapsed = time.monotonic() - t0
            events = counter.events - events_before
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return {"rss_with": rss_with, "cpu_with": cpu_with, "events": events,
                    "elapsed": elapsed, "failed": counter.failed}

        m = asyncio.run(measure())
    finally:
        server.stop()
    idle_cpu_same_window = cpu_idle * m["elapsed"] / args.duration
    result = {
        "async_mode": args.async_mode, "clients": args.clients, "interval": args.interval,
        "messages": m["events"], "failed_connects": m["failed"],
        "rss_idle_mb": round(rss_idle / 2**20, 1), "rss_with_mb": round(m["rss_with"] / 2**20, 1),
        "kb_per_client": round((m["rss_with"] - rss_idle) / args.clients / 1024, 2),
        "cpu_idle_s": round(idle_cpu_same_window, 3), "cpu_with_s": round(m["cpu_with"], 3),
        "us_cpu_per_client_message": round(
            (m["cpu_with"] - idle_cpu_same_window) / max(1, m["events"]) * 1e6, 2),
        "server_cpu_share": round(m["cpu_with"] / m["elapsed"], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
