"""How much CPU the load generator itself spends per received message.

Runs a fake Socket.IO server (a bare asyncio WebSocket server that writes one
pre-encoded ``random_number`` frame to every client ``--rate`` times a second;
nearly free per client) on CPU 0, then each client implementation of
``loadgen.py`` on CPU 1, and prints generator CPU per message and latencies::

    .venv/bin/python bench/client_cost.py --clients 2000 --rate 5 --duration 10

If the generator's cost per message times the messages per second the real
benchmark needs stays well below one core, the generator is not the bottleneck.
The fake server's own CPU per message (``srv us/msg``) is the floor for any server
that makes one send() per client: on loopback it includes the kernel's TCP work for
both ends.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import sys
import tempfile
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes([0x81, n]) + payload
    return bytes([0x81, 126]) + n.to_bytes(2, "big") + payload


class FakeSocketIO(asyncio.Protocol):
    """Answers GET /healthz, or upgrades and completes the Socket.IO handshake at once.

    What clients send afterwards (``40``, pongs) is ignored."""

    clients: set = set()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buf = b""
        self.upgraded = False

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            return
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        if self.buf.startswith(b"GET /healthz"):
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            )
            self.transport.close()
            return
        key = next(
            line.split(b":", 1)[1].strip()
            for line in self.buf.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: "
            + accept
            + b"\r\n\r\n"
            + text_frame(b'0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":20000}')
            + text_frame(b'40{"sid":"y"}')
        )
        self.upgraded = True
        self.clients.add(self)

    def connection_lost(self, exc) -> None:
        self.clients.discard(self)


async def serve(port: int, rate: float) -> None:
    """Tick on a fixed schedule and write the same frame to every client."""
    loop = asyncio.get_running_loop()
    await loop.create_server(FakeSocketIO, "127.0.0.1", port, backlog=4096)
    seq = 0
    t0 = time.time()
    while True:
        seq += 1
        await asyncio.sleep(max(0.0, t0 + seq / rate - time.time()))
        reading = {"seq": seq, "value": seq % 101, "ts": time.time()}
        frame = text_frame(
            b'42["random_number",' + json.dumps(reading, separators=(",", ":")).encode() + b"]"
        )
        for client in list(FakeSocketIO.clients):
            client.transport.write(frame)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    p.add_argument("--clients", type=int, default=2000)
    p.add_argument("--rate", type=float, default=5.0, help="fake ticks per second")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--impls", default="raw,websockets,aiohttp")
    p.add_argument("--no-uvloop", action="store_true")
    args = p.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve(args.serve, args.rate))
        return
    cpus = harness.available_cpus()
    server_cpus, gen_cpus = {cpus[0]}, {cpus[-1]}
    tmp = Path(tempfile.mkdtemp(prefix="client-cost-"))
    print(
        f"fake server: {args.rate:g} Hz to {args.clients} clients; generator pinned to CPU {cpus[-1]}"
    )
    print(
        f"{'client':<11} {'loop':<7} {'conn':>6} {'msgs/s':>8} {'gen CPU%':>8} {'us/msg':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'missed':>7} {'lag99 ms':>8} {'srv us/msg':>10}"
    )
    try:
        for impl in args.impls.split(","):
            port = harness.free_port()
            server = harness.ServerProcess(
                "fake",
                [harness.PYTHON, __file__, "--serve", str(port), "--rate", str(args.rate)],
                port,
                server_cpus,
                tmp / f"fake-{impl}.log",
            )
            try:
                server.wait_ready(10)
                extra = ["--client", impl] + (["--no-uvloop"] if args.no_uvloop else [])
                gen = harness.GeneratorProcess(
                    port, args.clients, gen_cpus, tmp / f"{impl}.f64", extra
                )
                ramped = gen.read("ramped", 120)
                window_start = time.time() + 0.05
                gen.start(window_start, window_start + args.duration, 1.0)
                time.sleep(max(0.0, window_start - time.time()))
                scpu0 = server.cpu_seconds()
                gen.read("window_end", args.duration + 30)
                scpu1 = server.cpu_seconds()
                result = gen.read("result", args.duration + 30)
                gen.stop()
            finally:
                server.stop()
            lat = array("d")
            lat.frombytes((tmp / f"{impl}.f64").read_bytes())
            lat = sorted(lat)
            msgs = result["messages"]
            missed = result["clients"] * len(result["seq_ts"]) - msgs
            cpu = result["gen_cpu_s"]
            print(
                f"{impl:<11} {'asyncio' if args.no_uvloop else 'uvloop':<7} {ramped['connected']:>6} "
                f"{msgs / result['gen_wall_s']:>8.0f} {100 * cpu / result['gen_wall_s']:>8.1f} "
                f"{1e6 * cpu / max(1, msgs):>7.1f} {1e3 * lat[len(lat) // 2]:>7.1f} "
                f"{1e3 * lat[int(len(lat) * 0.99)]:>7.1f} {missed:>7} "
                f"{result['gen_lag_ms'].get('p99', float('nan')):>8.1f} {1e6 * (scpu1 - scpu0) / max(1, msgs):>10.1f}",
                flush=True,
            )
    finally:
        harness.stop_all()


if __name__ == "__main__":
    main()
