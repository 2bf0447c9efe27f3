"""Load generator: N real Socket.IO v5 / Engine.IO v4 clients over WebSocket.

Each client opens ``ws://HOST:PORT/socket.io/?EIO=4&transport=websocket``, answers
the Engine.IO open packet ``0{...}`` with ``40``, waits for ``40{...}``, answers
pings ``2`` with ``3`` and records every ``42["random_number", {...}]``:
latency = arrival time - reading.ts, per-client seq gaps and duplicates.

Three client implementations share the bookkeeping (``--client``):
  raw         a minimal RFC 6455 client on ``asyncio.Protocol`` (default, cheapest)
  websockets  the ``websockets`` package
  aiohttp     ``aiohttp.ClientSession.ws_connect``
``bench/client_cost.py`` measures what each costs per message.

Standalone::

    python bench/loadgen.py --port 5000 --clients 1000 --duration 20

Driven by ``bench/run.py`` (``--control``): prints JSON lines on stdout
(``ramped``, ``window_end``, ``result``) and waits for ``start`` on stdin after
the ramp, so the runner can sample the server between phases.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import resource
import socket
import struct
import sys
import time
from array import array

try:  # orjson parses a reading in ~1 us, json in ~5 us: it matters at 10,000 messages a tick
    from orjson import loads
except ImportError:
    from json import loads

OPEN, CLOSE, PING, PONG, MESSAGE = "0", "1", "2", "3", "4"  # Engine.IO v4 packet types
SIO_CONNECT, SIO_EVENT = "0", "2"  # Socket.IO v5 packet types
WS_PATH = "/socket.io/?EIO=4&transport=websocket"


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin_to_cpus(cpus: set[int] | None) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus & os.sched_getaffinity(0) or os.sched_getaffinity(0))


class Recorder:
    """What all clients of this process saw; the window is set by ``start``."""

    def __init__(self) -> None:
        self.window_start = float("inf")
        self.window_end = float("inf")
        self.latencies = array("d")
        self.seq_ts: dict[int, float] = {}  # seq -> ts for readings drawn in the window
        self.first_arrival: dict[int, float] = {}  # seq -> earliest arrival in this process
        self.last_arrival: dict[int, float] = {}  # seq -> latest arrival in this process
        self.messages = 0  # in-window readings received (first copy only)
        self.duplicates = 0
        self.gaps = 0  # seqs skipped between consecutive readings of one client
        self.out_of_window = 0
        self.other_events: dict[str, int] = {}
        self.disconnects = 0
        self.lags = array("d")  # kernel arrival -> read by the generator, in-window only

    def lag(self, seconds: float) -> None:
        if self.window_start <= time.time() <= self.window_end + 1.0:
            self.lags.append(seconds)


class Client:
    """Engine.IO/Socket.IO state of one connection; ``send`` writes one text frame."""

    __slots__ = ("rec", "send", "connected", "last_seq", "closed", "ready", "herd")

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.send = None
        self.connected = False
        self.closed = False
        self.last_seq = -1
        self.ready: asyncio.Future | None = None
        self.herd: HerdState | None = None  # set by --reconnect: what a reconnect must restore

    def on_text(self, text: str, now: float) -> None:
        kind = text[0]
        if kind == MESSAGE:
            if text[1] == SIO_EVENT:
                self.on_event(text, now)
            elif text[1] == SIO_CONNECT:
                self.connected = True
                if self.herd is not None:
                    self.herd.joined(self, now)
                if self.ready is not None and not self.ready.done():
                    self.ready.set_result(True)
            elif text[1] == "4":  # CONNECT_ERROR
                if self.ready is not None and not self.ready.done():
                    self.ready.set_exception(ConnectionError("connect_error " + text[2:200]))
        elif kind == PING:
            self.send(PONG)
        elif kind == OPEN:
            herd = self.herd
            if herd is not None and herd.auth_after() is not None:
                # Back after a drop, as static/js/sync.js: the CONNECT says what it holds.
                self.send(MESSAGE + SIO_CONNECT + json.dumps({"after": herd.auth_after()}))
            else:
                self.send(MESSAGE + SIO_CONNECT)

    def on_event(self, text: str, now: float) -> None:
        name, *args = loads(text[2:])
        rec = self.rec
        if self.herd is not None:
            self.herd.event(name, args, now)
        if name != "random_number":
            rec.other_events[name] = rec.other_events.get(name, 0) + 1
            if name == "history":
                readings = args[0].get("readings") if args and isinstance(args[0], dict) else None
                if readings:
                    self.last_seq = max(self.last_seq, readings[-1]["seq"])
            return
        reading = args[0]
        seq = reading["seq"]
        last = self.last_seq
        if seq <= last:
            rec.duplicates += 1
            return
        if last >= 0 and seq != last + 1:
            rec.gaps += seq - last - 1
        self.last_seq = seq
        ts = reading["ts"]
        if rec.window_start <= ts <= rec.window_end:
            rec.messages += 1
            rec.latencies.append(now - ts)
            if seq not in rec.seq_ts:
                rec.seq_ts[seq] = ts
                rec.first_arrival[seq] = now
            rec.last_arrival[seq] = now
        else:
            rec.out_of_window += 1

    def on_close(self) -> None:
        if not self.closed:
            self.closed = True
            was_connected = self.connected
            if self.connected:
                self.rec.disconnects += 1
            self.connected = False
            if self.ready is not None and not self.ready.done():
                self.ready.set_exception(ConnectionError("closed before Socket.IO connect"))
            if self.herd is not None and was_connected:
                self.herd.lost(self)


class HerdState:
    """One client's side of a server restart, as static/js/connection.js and sync.js do it.

    On a lost connection: retry after base * factor^attempt ms (capped) minus a random share
    of up to ``jitter``; once joined again, ``resume`` {after: the last seq held}. It records
    when it lost the server, when it joined again, and when it held every seq again up to
    the first live reading after the restart ("gap-free")."""

    __slots__ = ("gen", "held", "pending", "lost_at", "lost_seq", "joined_at", "live_edge",
                 "done_at", "attempts", "errors", "resumed")

    def __init__(self, gen: LoadGenerator) -> None:
        self.gen = gen
        self.held = -1  # highest seq with every seq up to it held (from the first one seen)
        self.pending: set[int] = set()  # seqs held above ``held``
        self.lost_at = None
        self.lost_seq = None
        self.joined_at = None
        self.live_edge = None  # first live seq after rejoining
        self.done_at = None
        self.attempts = 0
        self.errors: list[str] = []
        self.resumed = False

    def take(self, seq: int) -> None:
        if self.held < 0:
            self.held = seq
        elif seq > self.held:
            self.pending.add(seq)
            while self.held + 1 in self.pending:
                self.held += 1
                self.pending.discard(self.held)

    def check_done(self, now: float) -> None:
        if self.done_at is None and self.live_edge is not None and self.held >= self.live_edge:
            self.done_at = now

    def event(self, name: str, args: list, now: float) -> None:
        if name == "random_number":
            seq = args[0]["seq"]
            if self.lost_at is not None and self.joined_at is not None and self.live_edge is None:
                self.live_edge = seq
            self.take(seq)
        elif name == "history":
            data = args[0] if args and isinstance(args[0], dict) else {}
            for r in data.get("readings") or ():
                self.take(r["seq"])
        elif name == "error":
            data = args[0] if args and isinstance(args[0], dict) else {}
            self.errors.append(str(data.get("message"))[:120])
        if self.lost_at is not None:
            self.check_done(now)

    def auth_after(self) -> int | None:
        """The `after` a reconnect's CONNECT carries (--resume-with connect), else None."""
        if self.gen.args.resume_with != "connect" or self.lost_seq is None or self.lost_seq < 0:
            return None
        return self.lost_seq

    def joined(self, client: Client, now: float) -> None:
        self.attempts = 0
        if self.lost_at is not None and self.joined_at is None:
            self.joined_at = now
            if self.auth_after() is not None:
                self.resumed = True  # the server answered the CONNECT's `after`
            elif self.lost_seq is not None and self.lost_seq >= 0:
                client.send(MESSAGE + SIO_EVENT + json.dumps(["resume", {"after": self.lost_seq}]))
                self.resumed = True

    def lost(self, client: Client) -> None:
        if not self.gen.reconnecting:
            return
        if self.lost_at is None:
            self.lost_at = time.time()
            self.lost_seq = self.held
        self.gen.schedule_reopen(client, self)

    def delay(self) -> float:
        a = self.gen.args
        raw = min(a.backoff_cap, a.backoff_base * a.backoff_factor**self.attempts)
        self.attempts += 1
        return raw * (1 - a.backoff_jitter * self.gen.random())


# ---------------------------------------------------------------- raw client
# Kernel receive timestamps: latency is taken from when the reading reached this
# machine's socket, not from when this (single-threaded) generator got round to it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
CMSG_SPACE = socket.CMSG_SPACE(16) if hasattr(socket, "CMSG_SPACE") else 0
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a TCP reset
IP_BIND_ADDRESS_NO_PORT = getattr(
    socket, "IP_BIND_ADDRESS_NO_PORT", 24 if sys.platform.startswith("linux") else 0
)


class RawWebSocket:
    """Just enough RFC 6455 for a Socket.IO client: text frames, ping, close.

    A non-blocking socket watched with ``loop.add_reader``; each read takes the
    kernel's receive timestamp (SO_TIMESTAMPNS) where the platform has it, so a
    reading that waited in the socket buffer while the generator was busy with
    other clients still gets its true arrival time. ``rec.lags`` keeps how long
    readings waited for the generator: the generator's own delay."""

    def __init__(self, client: Client, host: str, port: int, source: str = "") -> None:
        self.client = client
        self.host = host
        self.port = port
        self.source = source
        self.sock: socket.socket | None = None
        self.loop = asyncio.get_running_loop()
        self.handshaking = True
        self.buf = b""
        self.fragments: list[bytes] = []
        self.handshake_error: str | None = None
        self.stamped = False
        client.send = self.send_text

    async def open(self, timeout: float) -> None:
        sock = socket.socket(
            socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM
        )
        self.sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.source:
            # The port is chosen at connect(), per (source, destination): each source address
            # has its own ~28,000 ephemeral ports.
            if IP_BIND_ADDRESS_NO_PORT:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.source, 0))
        if SO_TIMESTAMPNS and CMSG_SPACE:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self.stamped = True
            except OSError:
                pass
        try:
            await asyncio.wait_for(self.loop.sock_connect(sock, (self.host, self.port)), timeout)
        except BaseException:
            sock.close()
            raise
        key = base64.b64encode(os.urandom(16)).decode()
        sock.send(
            (
                f"GET {WS_PATH} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.loop.add_reader(sock.fileno(), self.on_readable)

    def send_frame(self, opcode: int, payload: bytes) -> None:
        if self.sock is None:
            return
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        try:
            self.sock.send(header + mask + masked)  # a few bytes: the send buffer takes them
        except OSError:
            pass

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    def on_readable(self) -> None:
        try:
            data, ancdata, _, _ = self.sock.recvmsg(
                8192, CMSG_SPACE
            )  # small: Python allocates the whole size per call
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.closed_by_peer()
            return
        if not data:
            self.closed_by_peer()
            return
        now = time.time()
        if ancdata:
            secs, nsecs = struct.unpack("qq", ancdata[0][2][:16])
            stamp = secs + nsecs * 1e-9
            self.client.rec.lag(now - stamp)
            now = stamp
        self.data_received(data, now)

    def data_received(self, data: bytes, now: float) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if self.handshaking:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            status = data[: data.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                self.handshake_error = status.decode("latin-1")[:120]
                self.closed_by_peer()
                return
            self.handshaking = False
            data = data[end + 4 :]
        pos = 0
        size = len(data)
        client = self.client
        while size - pos >= 2:
            b0 = data[pos]
            n = data[pos + 1] & 0x7F
            hdr = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(data[pos + 2 : pos + 4], "big")
                hdr = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hdr = 10
            if size - pos < hdr + n:
                break
            payload = data[pos + hdr : pos + hdr + n]
            pos += hdr + n
            opcode = b0 & 0x0F
            if not b0 & 0x80:  # fragment of a longer message
                self.fragments.append(payload)
                continue
            if opcode == 0x0:
                self.fragments.append(payload)
                payload = b"".join(self.fragments)
                self.fragments = []
                opcode = 0x1
            if opcode == 0x1:
                client.on_text(payload.decode(), now)
            elif opcode == 0x9:
                self.send_frame(0xA, payload)
            elif opcode == 0x8:
                self.send_frame(0x8, payload[:2])
                self.closed_by_peer()
                return
        if pos < size:
            self.buf = data[pos:]

    def _release(self) -> None:
        if self.sock is not None:
            try:
                self.loop.remove_reader(self.sock.fileno())
            except (ValueError, OSError):
                pass
            self.sock.close()
            self.sock = None

    def closed_by_peer(self) -> None:
        self._release()
        self.client.on_close()

    def close(self) -> None:
        """Leave as a browser tab does: Socket.IO disconnect, WebSocket close, FIN."""
        if self.sock is not None and not self.handshaking:
            self.send_text(MESSAGE + "1")
            self.send_frame(0x8, struct.pack("!H", 1000))
        self._release()
        self.client.on_close()

    def abort(self) -> None:
        """Vanish as a dropped network does: TCP reset, no goodbye."""
        if self.sock is not None:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            except OSError:
                pass
        self._release()
        self.client.on_close()


_sources: list[str] = []  # --source-addresses, taken in turn
_next_source = 0


async def run_raw(client: Client, host: str, port: int, timeout: float) -> RawWebSocket:
    global _next_source
    source = ""
    if _sources:
        source = _sources[_next_source % len(_sources)]
        _next_source += 1
    conn = RawWebSocket(client, host, port, source)
    try:
        await conn.open(timeout)
    except BaseException:
        client.send = None
        raise
    return conn


# ------------------------------------------------ library clients (for comparison)
class LibraryConnection:
    def __init__(self, task: asyncio.Task) -> None:
        self.task = task

    def close(self) -> None:
        self.task.cancel()


async def run_websockets(client: Client, host: str, port: int, timeout: float):
    import websockets

    ws = await asyncio.wait_for(
        websockets.connect(
            f"ws://{host}:{port}{WS_PATH}",
            compression=None,
            ping_interval=None,
            max_queue=None,
            open_timeout=timeout,
        ),
        timeout,
    )

    def send(text: str) -> None:
        asyncio.ensure_future(ws.send(text))

    client.send = send

    async def reader() -> None:
        try:
            async for message in ws:
                client.on_text(message, time.time())
        except Exception:
            pass
        finally:
            client.on_close()
            await ws.close()

    return LibraryConnection(asyncio.ensure_future(reader()))


_aiohttp_session = None


async def run_aiohttp(client: Client, host: str, port: int, timeout: float):
    import aiohttp

    global _aiohttp_session
    if _aiohttp_session is None:
        _aiohttp_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True)
        )
    ws = await _aiohttp_session.ws_connect(
        f"ws://{host}:{port}{WS_PATH}",
        autoping=True,
        compress=0,
        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout),
    )

    def send(text: str) -> None:
        asyncio.ensure_future(ws.send_str(text))

    client.send = send

    async def reader() -> None:
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    client.on_text(msg.data, time.time())
        except Exception:
            pass
        finally:
            client.on_close()
            await ws.close()

    return LibraryConnection(asyncio.ensure_future(reader()))


OPENERS = {"raw": run_raw, "websockets": run_websockets, "aiohttp": run_aiohttp}


# ------------------------------------------------------------------- driver
def _retrieve(future: asyncio.Future) -> None:
    """Mark a failed attempt's exception seen: it is counted, not logged."""
    if not future.cancelled():
        future.exception()


class LoadGenerator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rec = Recorder()
        self.clients: collections.deque[Client] = collections.deque()
        self.conns: collections.deque = collections.deque()
        self.opened = 0
        self.closed = 0
        self.errors: dict[str, int] = {}
        self.reconnecting = False  # --reconnect: set after the ramp
        self.reopen_errors: dict[str, int] = {}
        self.reopens = 0
        import random

        self.random = random.Random(os.getpid()).random

    def schedule_reopen(self, client: Client, herd: HerdState) -> None:
        delay = herd.delay() / 1000
        asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(self.reopen(client, herd))
        )

    async def reopen(self, client: Client, herd: HerdState) -> None:
        """One reconnect attempt; a failed one schedules the next, as connection.js does."""
        if not self.reconnecting:
            return
        args = self.args
        self.reopens += 1
        client.closed = False
        client.ready = asyncio.get_running_loop().create_future()
        client.ready.add_done_callback(_retrieve)
        conn = None
        try:
            conn = await OPENERS[args.client](client, args.host, args.port, args.connect_timeout)
            await asyncio.wait_for(asyncio.shield(client.ready), args.connect_timeout)
        except Exception as exc:
            reason = getattr(conn, "handshake_error", None) or type(exc).__name__
            self.reopen_errors[reason] = self.reopen_errors.get(reason, 0) + 1
            if client.ready.done():
                client.ready.exception()
            else:
                client.ready.cancel()
            if conn is not None:
                client.connected = False  # a refused join: its close must not count as a loss
                conn.close()
            client.closed = True
            if self.reconnecting:
                self.schedule_reopen(client, herd)
            return
        self.conns.append(conn)

    def herd_report(self) -> dict:
        """Each client's restart figures (epoch seconds); the runner relates them to the restart."""
        rows = [c.herd for c in self.clients if c.herd is not None]
        errors: dict[str, int] = {}
        for h in rows:
            for e in h.errors:
                errors[e] = errors.get(e, 0) + 1
        return {
            "event": "herd",
            "clients": len(rows),
            "lost": sum(h.lost_at is not None for h in rows),
            "connected": sum(c.connected for c in self.clients),
            "joined_at": [h.joined_at for h in rows if h.joined_at is not None],
            "done_at": [h.done_at for h in rows if h.done_at is not None],
            "resumed": sum(h.resumed for h in rows),
            # seqs between a client's last seq before the restart and its newest that it lacks
            "holes": sum(len(range(h.held + 1, max(h.pending) + 1)) - len(h.pending)
                         for h in rows if h.pending),
            "not_done": sum(h.lost_at is not None and h.done_at is None for h in rows),
            "attempts": self.reopens,
            "attempt_errors": self.reopen_errors,
            "error_events": errors,
            "seq_ts": self.rec.seq_ts,
            "first_arrival": self.rec.first_arrival,
            "duplicates": self.rec.duplicates,
            "latencies": lag_percentiles(self.rec.latencies),  # live readings, ms
        }

    async def open_one(self, sem: asyncio.Semaphore) -> None:
        args = self.args
        client = Client(self.rec)
        if args.reconnect:
            client.herd = HerdState(self)
        client.ready = asyncio.get_running_loop().create_future()
        async with sem:
            conn = None
            try:
                conn = await OPENERS[args.client](
                    client, args.host, args.port, args.connect_timeout
                )
                await asyncio.wait_for(asyncio.shield(client.ready), args.connect_timeout)
            except Exception as exc:  # every failure is counted, none stops the ramp
                if conn is not None:
                    conn.close()
                reason = getattr(conn, "handshake_error", None) or type(exc).__name__
                self.errors[reason] = self.errors.get(reason, 0) + 1
                if client.ready.done():
                    client.ready.exception()  # retrieved, so asyncio does not log it
                else:
                    client.ready.cancel()
                return
        self.clients.append(client)
        self.conns.append(conn)
        self.opened += 1

    async def ramp(self) -> dict:
        args = self.args
        t0 = time.monotonic()
        cpu0 = time.process_time()
        sem = asyncio.Semaphore(args.concurrency)
        deadline = t0 + args.ramp_timeout
        failed_batches = 0
        for start in range(0, args.clients, args.batch):
            if time.monotonic() > deadline:
                self.errors["ramp_timeout"] = (
                    self.errors.get("ramp_timeout", 0) + args.clients - start
                )
                break
            n = min(args.batch, args.clients - start)
            before = len(self.clients)
            await asyncio.gather(*(self.open_one(sem) for _ in range(n)))
            failed_batches = failed_batches + 1 if len(self.clients) == before else 0
            if failed_batches == 2 and start + n < args.clients:
                # Two whole batches failed in a row: the server takes no more (e.g. a
                # full pool). Count the rest as failed rather than wait out their timeouts.
                self.errors["not_tried_after_failed_batches"] = args.clients - start - n
                break
        return {
            "event": "ramped",
            "requested": args.clients,
            "connected": sum(c.connected for c in self.clients),
            "failed": sum(self.errors.values()),
            "errors": self.errors,
            "ramp_s": round(time.monotonic() - t0, 3),
            "ramp_cpu_s": round(time.process_time() - cpu0, 3),
        }

    async def measure(self, window_start: float, window_end: float, grace: float, emit) -> dict:
        """Record readings with ts in [window_start, window_end]; report after ``grace``."""
        rec = self.rec
        rec.window_start, rec.window_end = window_start, window_end
        await asyncio.sleep(max(0.0, window_start - time.time()))
        alive_at_start = sum(c.connected for c in self.clients)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(max(0.0, window_end - time.time()))
        cpu1, wall1 = time.process_time(), time.monotonic()
        emit({"event": "window_end"})
        await asyncio.sleep(grace)
        if self.args.samples_out:
            with open(self.args.samples_out, "wb") as f:
                rec.latencies.tofile(f)
        return {
            "event": "result",
            "clients": alive_at_start,
            "alive_at_end": sum(c.connected for c in self.clients),
            "window": [rec.window_start, rec.window_end],
            "messages": rec.messages,
            "duplicates": rec.duplicates,
            "gaps": rec.gaps,
            "disconnects": rec.disconnects,
            "other_events": rec.other_events,
            "seq_ts": rec.seq_ts,
            "first_arrival": rec.first_arrival,
            "last_arrival": rec.last_arrival,
            "gen_cpu_s": cpu1 - cpu0,
            "gen_lag_ms": lag_percentiles(rec.lags),
            "gen_wall_s": wall1 - wall0,
            "samples_out": self.args.samples_out,
        }

    async def churn(self, rate: float, seconds: float, report_every: float, emit) -> None:
        """Keep the clients connected while replacing ``rate`` of them a second.

        The oldest go first; every other one leaves cleanly (Socket.IO disconnect,
        WebSocket close), the rest vanish (TCP reset), as closed browser tabs and
        dropped networks do. A progress line is emitted every ``report_every`` seconds."""
        sem = asyncio.Semaphore(self.args.concurrency)
        pending: set[asyncio.Task] = set()
        step = 0.1
        due = 0.0
        t0 = time.monotonic()
        next_report = t0 + report_every
        n = 0
        while (now := time.monotonic()) < t0 + seconds:
            due += rate * step
            while due >= 1:
                due -= 1
                if self.conns:
                    self.clients.popleft()
                    conn = self.conns.popleft()
                    if n % 2 and isinstance(conn, RawWebSocket):
                        conn.abort()
                    else:
                        conn.close()
                    self.closed += 1
                    n += 1
                task = asyncio.ensure_future(self.open_one(sem))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if now >= next_report:
                next_report += report_every
                emit(self.progress(now - t0))
            await asyncio.sleep(
                max(0.0, t0 + (round((now - t0) / step) + 1) * step - time.monotonic())
            )
        if pending:
            await asyncio.wait(pending, timeout=self.args.connect_timeout)
        emit(self.progress(time.monotonic() - t0) | {"event": "churn_done"})

    def progress(self, elapsed: float) -> dict:
        return {
            "event": "progress",
            "elapsed_s": round(elapsed, 1),
            "connected": sum(c.connected for c in self.clients),
            "opened": self.opened,
            "closed": self.closed,
            "failed": sum(self.errors.values()),
            "errors": self.errors,
            "readings": self.rec.out_of_window + self.rec.messages,
            "gaps": self.rec.gaps,
            "duplicates": self.rec.duplicates,
        }

    def close_all(self) -> None:
        for conn in self.conns:
            conn.close()


def lag_percentiles(lags: array) -> dict:
    """How long readings sat in the kernel before this generator read them (ms)."""
    if not lags:
        return {}
    s = sorted(lags)
    return {
        f"p{q}": round(s[min(len(s) - 1, int(len(s) * q / 100))] * 1e3, 2) for q in (50, 99)
    } | {"max": round(s[-1] * 1e3, 2), "n": len(s)}


def emit_line(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def read_command() -> str:
    loop = asyncio.get_running_loop()
    return (await loop.run_in_executor(None, sys.stdin.readline)).strip()


async def main_async(args: argparse.Namespace) -> None:
    gen = LoadGenerator(args)
    def rec_window(until: float) -> None:
        gen.rec.window_start, gen.rec.window_end = time.time(), until

    try:
        ramped = await gen.ramp()
        if args.churn_rate > 0:
            emit_line(ramped)
            await gen.churn(args.churn_rate, args.duration, args.report_every, emit_line)
        elif args.control:
            emit_line(ramped)
            while True:
                command = await read_command()
                if not command or command == "quit":
                    return
                if command.startswith("herd"):
                    # Reconnect from now on; record readings with ts in [now, until] for
                    # the tick schedule across the restart; "report" sends the figures.
                    _, until = command.split()
                    rec_window(float(until))
                    gen.reconnecting = True
                    continue
                if command == "report":
                    emit_line(gen.herd_report())
                    gen.reconnecting = False
                    continue
                if command.startswith("start"):
                    _, window_start, window_end, grace = command.split()
                    result = await gen.measure(
                        float(window_start), float(window_end), float(grace), emit_line
                    )
                    emit_line(result)
                    return
        else:
            print(f"ramp: {json.dumps(ramped)}", file=sys.stderr)
            now = time.time()
            result = await gen.measure(now, now + args.duration, args.grace, lambda _: None)
            print_summary(ramped, result)
    finally:
        gen.reconnecting = False
        gen.close_all()
        await asyncio.sleep(0.2)
        if _aiohttp_session is not None:
            await _aiohttp_session.close()


def percentile(sorted_values, q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def print_summary(ramped: dict, result: dict) -> None:
    lat = sorted(result.pop("_latencies", None) or [])
    if not lat and result.get("samples_out"):
        a = array("d")
        with open(result["samples_out"], "rb") as f:
            a.frombytes(f.read())
        lat = sorted(a)
    seqs = len(result["seq_ts"])
    missed = result["clients"] * seqs - result["messages"]
    print(
        f"clients {ramped['connected']}/{ramped['requested']} failed {ramped['failed']} "
        f"readings {seqs} messages {result['messages']} missed {missed} dup {result['duplicates']}\n"
        f"latency ms p50 {percentile(lat, 50) * 1e3:.1f} p99 {percentile(lat, 99) * 1e3:.1f} "
        f"max {(lat[-1] if lat else float('nan')) * 1e3:.1f}\n"
        f"generator cpu {100 * result['gen_cpu_s'] / result['gen_wall_s']:.0f}% "
        f"({1e6 * result['gen_cpu_s'] / max(1, result['messages']):.1f} us/message), "
        f"read lag ms {result['gen_lag_ms'] or 'n/a (no kernel timestamps)'}"
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--batch", type=int, default=500, help="connections opened per ramp step")
    p.add_argument("--concurrency", type=int, default=250, help="connects in flight at once")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--ramp-timeout", type=float, default=180.0, help="give up ramping after this")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument(
        "--grace", type=float, default=3.0, help="wait for late readings after the window"
    )
    p.add_argument("--client", choices=sorted(OPENERS), default="raw")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--cpus", default="", help="pin to these CPUs, e.g. 1")
    p.add_argument("--samples-out", default="", help="write latencies (float64 seconds) here")
    p.add_argument(
        "--control", action="store_true", help="driven by bench/run.py over stdin/stdout"
    )
    p.add_argument(
        "--churn-rate",
        type=float,
        default=0.0,
        help="after the ramp, replace this many clients a second for --duration seconds",
    )
    p.add_argument(
        "--report-every", type=float, default=10.0, help="churn progress line every N seconds"
    )
    p.add_argument(
        "--source-addresses",
        default="",
        help="comma-separated loopback source addresses taken in turn (e.g. 127.0.0.2,127.0.0.3)",
    )
    p.add_argument(
        "--reconnect",
        action="store_true",
        help="(with --control and the herd command) reconnect lost clients with backoff and "
        "jitter, then resume {after: last seq}, as static/js/connection.js and sync.js do",
    )
    p.add_argument(
        "--resume-with",
        choices=("connect", "event"),
        default="connect",
        help="(--reconnect) say what the client holds in the CONNECT's auth, as static/js/sync.js "
        "does, or send a `resume` event once joined (the way before)",
    )
    p.add_argument("--backoff-base", type=float, default=500.0, help="ms, as connection.js")
    p.add_argument("--backoff-factor", type=float, default=2.0)
    p.add_argument("--backoff-cap", type=float, default=30000.0, help="ms")
    p.add_argument("--backoff-jitter", type=float, default=0.5)
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("--host must be a loopback address")
    args.source_list = [a for a in args.source_addresses.split(",") if a]
    import ipaddress

    for a in args.source_list:
        try:
            if not ipaddress.ip_address(a).is_loopback:
                raise ValueError
        except ValueError:
            p.error(f"--source-addresses: {a!r} is not a loopback address")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    _sources[:] = args.source_list
    raise_fd_limit()
    pin_to_cpus({int(c) for c in args.cpus.split(",") if c} or None)
    if not args.samples_out and not args.control and not args.churn_rate:
        import tempfile

        args.samples_out = tempfile.mktemp(prefix="loadgen-", suffix=".f64")
    run = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            pass
    try:
        run(main_async(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
