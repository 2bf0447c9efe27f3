"""The attackers of bench/abuse.py: raw sockets that misbehave on purpose, and a raw
Socket.IO client cheap enough to open thousands of.

Everything here talks to 127.0.0.1 and may bind another loopback source address
(127.0.0.2, 127.0.1.x): on Linux all of 127/8 is local, and each address counts as
another client for the server's per-address limits.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import struct
import sys
import time

OPEN, PING, PONG, MESSAGE = "0", "2", "3", "4"  # Engine.IO v4 packet types
CONNECT, EVENT = "0", "2"  # Socket.IO v5 packet types
WS_PATH = "/socket.io/?EIO=4&transport=websocket"
POLL_PATH = "/socket.io/?EIO=4&transport=polling"


def sources(count: int, per_address: int) -> list[str]:
    """`count` source addresses, `per_address` uses of each: 127.0.1.1, 127.0.1.2, ..."""
    return [f"127.0.{1 + i // per_address // 250}.{1 + i // per_address % 250}"
            for i in range(count)]


def tcp(port: int, source: str | None = None, timeout: float = 2.0,
        rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    try:
        if rcvbuf:  # before connect: the window the server sees is set at the handshake
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            s.bind((source, 0))
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        return s
    except OSError:
        s.close()
        raise


def open_many(port: int, count: int, payload=b"", source=None, deadline: float | None = None,
              rcvbuf: int | None = None) -> list[socket.socket]:
    """Up to `count` connections, each sent `payload` (bytes, or a function of its index);
    stops at the first that fails or at `deadline` (monotonic)."""
    socks = []
    for i in range(count):
        if deadline is not None and time.monotonic() > deadline:
            break
        src = source(i) if callable(source) else source
        try:
            s = tcp(port, src, rcvbuf=rcvbuf)
            data = payload(i) if callable(payload) else payload
            if data:
                s.sendall(data)
        except OSError:
            break
        socks.append(s)
    return socks


def close_all(socks) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


class Dribble:
    """Connections that send a little, now and then, and never finish their request.

    `tick(data)` sends `data` on each still open; a connection the server closed (end of
    stream, reset) is counted as cut, one it answered (bytes back) as answered."""

    def __init__(self, socks: list[socket.socket]) -> None:
        for s in socks:
            s.setblocking(False)  # a socket with a timeout waits for data even with MSG_DONTWAIT
        self.open = list(socks)
        self.opened = len(socks)
        self.cut = 0
        self.answered = 0
        self._answered: set[int] = set()

    def _check(self, s: socket.socket) -> bool:
        """False if the server has closed `s`."""
        try:
            while True:
                data = s.recv(65536, socket.MSG_DONTWAIT)
                if not data:
                    return False
                if id(s) not in self._answered:
                    self._answered.add(id(s))
                    self.answered += 1
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False

    def tick(self, data: bytes) -> None:
        alive = []
        for s in self.open:
            ok = self._check(s)
            if ok:
                try:
                    s.send(data, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    pass  # its buffer is full: the server is not reading; still open
                except OSError:
                    ok = False
            if ok:
                alive.append(s)
            else:
                self.cut += 1
                s.close()
        self.open = alive

    def hold(self, seconds: float, every: float, data: bytes) -> None:
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            time.sleep(min(every, end - now))
            self.tick(data)

    def leave(self) -> dict:
        self.tick(b"")  # a last look: which the server closed by now
        close_all(self.open)
        return {"opened": self.opened, "cut by server": self.cut, "answered": self.answered}


def polling_session(port: int, source: str) -> str | None:
    """A joined Engine.IO polling session's sid (handshake, then Socket.IO CONNECT), or None."""
    try:
        with tcp(port, source, timeout=5) as s:
            s.sendall(f"GET {POLL_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Connection: close\r\n\r\n".encode())
            answer = read_all(s)
        found = re.search(rb'"sid":"([^"]+)"', answer)
        if not found:
            return None
        sid = found.group(1).decode()
        with tcp(port, source, timeout=5) as s:
            s.sendall(f"POST {POLL_PATH}&sid={sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: text/plain\r\nContent-Length: 2\r\n"
                      "Connection: close\r\n\r\n40".encode())
            read_all(s)
        return sid
    except OSError:
        return None


def read_all(s: socket.socket, limit: int = 1 << 20) -> bytes:
    chunks, size = [], 0
    while size < limit:
        data = s.recv(65536)
        if not data:
            break
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)


# ------------------------------------------------------------------ WebSocket, raw
def upgrade_request() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {WS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def frame(text: str, opcode: int = 0x1) -> bytes:
    """A masked client frame (mask 0: valid, and the payload goes as it is)."""
    data = text.encode()
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + data


def ws_open(port: int, source: str, rcvbuf: int | None = None, timeout: float = 5.0):
    """A WebSocket to Engine.IO, its open packet read (not yet joined); None if refused."""
    try:
        s = tcp(port, source, timeout=timeout, rcvbuf=rcvbuf)
    except OSError:
        return None
    try:
        s.sendall(upgrade_request())
        buf = b""
        while b"\r\n\r\n" not in buf or b'"sid"' not in buf:  # the 101, then Engine.IO's open
            data = s.recv(4096)
            if not data:
                raise OSError("closed")
            buf += data
            if b"\r\n" in buf and b" 101 " not in buf.split(b"\r\n", 1)[0] + b" ":
                raise OSError("refused")
        return s
    except OSError:
        s.close()
        return None


def read_until(s: socket.socket, marker: bytes, limit: int = 8192) -> bool:
    """Read from `s` until `marker` (or `limit` bytes) came; False if it closed first."""
    buf = b""
    try:
        while marker not in buf and len(buf) < limit:
            data = s.recv(2048)
            if not data:
                return False
            buf += data
        return True
    except OSError:
        return False


class SioClient:
    """Engine.IO v4 / Socket.IO v5 over a raw WebSocket on asyncio: joins (with CONNECT auth
    {"after": seq} when resuming), answers pings, and keeps the seqs it was sent."""

    def __init__(self, port: int, source: str) -> None:
        self.port, self.source = port, source
        self.seqs: set[int] = set()
        self.duplicates = 0
        self.joined = False
        self.history_events = 0
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task | None = None

    @property
    def last(self) -> int:
        return max(self.seqs, default=-1)

    async def connect(self, after: int | None = None, timeout: float = 10.0) -> bool:
        """Join the namespace; True once the server acknowledged the CONNECT."""
        self.joined = False
        try:
            reader, self.writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=(self.source, 0)), timeout)
            self.writer.write(upgrade_request())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
                self.drop()
                return False
            joined = asyncio.get_running_loop().create_future()
            self.task = asyncio.ensure_future(self._pump(reader, joined, after))
            await asyncio.wait_for(asyncio.shield(joined), timeout)
            self.joined = True
            return True
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            self.drop()
            return False

    async def _pump(self, reader: asyncio.StreamReader, joined: asyncio.Future, after) -> None:
        try:
            while True:
                b0, b1 = await reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(await reader.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await reader.readexactly(8), "big")
                payload = await reader.readexactly(n)
                opcode = b0 & 0x0F
                if opcode == 0x8:
                    break
                if opcode == 0x9:
                    self.writer.write(frame(payload.decode("latin-1"), 0xA))
                elif opcode == 0x1:
                    self._on_text(payload.decode(), joined, after)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            if not joined.done():
                joined.set_exception(ConnectionError("closed before joining"))
                joined.exception()  # retrieved: a refusal is counted, not logged

    def _on_text(self, text: str, joined: asyncio.Future, after) -> None:
        kind = text[:1]
        if kind == PING:
            self.writer.write(frame(PONG))
        elif kind == OPEN:
            auth = json.dumps({"after": after}) if after is not None else ""
            self.writer.write(frame(MESSAGE + CONNECT + auth))
        elif text.startswith(MESSAGE + CONNECT) and not joined.done():
            if text.startswith(MESSAGE + CONNECT + "{"):
                joined.set_result(True)
            else:
                joined.set_exception(ConnectionError(text[:80]))
        elif text.startswith(MESSAGE + EVENT):
            name, *args = json.loads(text[2:])
            if name == "random_number":
                self._take(args[0]["seq"])
            elif name == "history":
                self.history_events += 1
                for r in args[0].get("readings") or ():
                    self._take(r["seq"])

    def _take(self, seq: int) -> None:
        if seq in self.seqs:
            self.duplicates += 1
        self.seqs.add(seq)

    def drop(self) -> None:
        """Vanish at once (no Socket.IO or WebSocket goodbye): a dropped network."""
        if self.writer is not None:
            self.writer.transport.abort()
            self.writer = None
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self.joined = False

    def holes(self, since: int) -> int:
        """Seqs after `since` up to its newest that it does not hold."""
        top = self.last
        return sum(1 for s in range(since + 1, top + 1) if s not in self.seqs)


async def join_all(clients: list[SioClient], after=None, concurrency: int = 500,
                   retry_until: float = 0.0) -> dict:
    """Connect every client, `concurrency` at a time; a refused one retries after 0.5-1 s
    until `retry_until` (monotonic), as the page's reconnect would. Returns the counts."""
    sem = asyncio.Semaphore(concurrency)
    counts = {"attempts": 0, "refused": 0}

    async def one(c: SioClient) -> None:
        while True:
            async with sem:
                counts["attempts"] += 1
                if await c.connect(after(c) if after else None):
                    return
            counts["refused"] += 1
            if time.monotonic() > retry_until:
                return
            await asyncio.sleep(0.5 + 0.5 * (hash(c) % 1000) / 1000)

    await asyncio.gather(*(one(c) for c in clients))
    return counts


async def herd(port: int, count: int, per_address: int = 100) -> None:
    """All join; 12 s later all drop at once and rejoin at once, resuming from the last seq
    each held; 5 s later all leave. Before the drop and before leaving, one JSON line on
    stdout (the figures so far), then it waits for a line on stdin: the caller samples the
    server meanwhile."""
    def step(event: str, **figures) -> None:
        print(json.dumps({"event": event, "figures": figures}), flush=True)
        sys.stdin.readline()

    herd_ = [SioClient(port, src) for src in sources(count, per_address)]
    started = time.monotonic()
    await join_all(herd_, retry_until=started + 60)
    joined = [c for c in herd_ if c.joined]
    took = time.monotonic() - started
    await asyncio.sleep(12)  # the per-address allowance refills (a tenth of 100 a second)
    step("in", joined=f"{len(joined)}/{count} in {took:.1f} s")
    held = {id(c): c.last for c in joined}
    for c in herd_:
        c.drop()
    started = time.monotonic()
    counts = await join_all(joined, after=lambda c: held[id(c)], retry_until=started + 60)
    back = [c for c in joined if c.joined]
    took = time.monotonic() - started
    await asyncio.sleep(5)
    step("back", rejoined=f"{len(back)}/{len(joined)} in {took:.1f} s",
         **{"rejoin attempts/refused": f"{counts['attempts']}/{counts['refused']}"},
         resumed=sum(c.last > held[id(c)] and not c.holes(held[id(c)]) for c in back),
         holes=sum(c.holes(held[id(c)]) for c in back),
         duplicates=sum(c.duplicates for c in back))
    for c in herd_:
        c.drop()
    await asyncio.sleep(0.2)


if __name__ == "__main__":  # python bench/abuse_clients.py herd PORT COUNT (for bench/abuse.py)
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    if sys.argv[1:2] == ["herd"]:
        asyncio.run(herd(int(sys.argv[2]), int(sys.argv[3])))
