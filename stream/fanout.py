"""Broadcast fan-out: encode a packet once, write the same WebSocket frame to every client.

python-socketio already encodes a broadcast once, then hands each recipient to engine.io,
which queues it for a per-client writer task that frames and sends it: a queue put, a task
switch, a frame and a send for every client, about 80 us of CPU per client under eventlet.
Here the frame is built once and written with one non-blocking send per client. A client
that cannot take it whole and at once (nothing else may be in flight for it) goes the
normal engine.io way, which keeps its order and its back-pressure.

Extension points used (tests/test_fanout.py fails if an upgrade moves them):
- a custom client manager, the documented way to change how python-socketio delivers
  (FastManager here; scaleout.StreamQueue puts it under the Redis pub/sub layer);
- the engine.io server's `_async["websocket"]` class, wrapped so that each engine.io
  socket remembers its eventlet WebSocket (engine.io keeps it in a local variable).
Only eventlet's WebSocket is fast-pathed; other modes and transports use the normal path.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque

from engineio import packet as eio_packet
from socketio import Manager
from socketio import packet as sio_packet

log = logging.getLogger(__name__)

# Packets a client may have waiting before it is cut off: it then reconnects and resumes,
# instead of holding an ever-growing queue in this process.
MAX_BACKLOG = 256


def websocket_frame(text: str) -> bytes:
    """An unmasked, final, uncompressed RFC 6455 text frame (the server-to-client form)."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


class FastBroadcast:
    """Mixin for a python-socketio client manager: the fast path for plain broadcasts."""

    fast = False  # until initialize(), at the first request
    fast_sends = 0
    slow_sends = 0
    laggards_dropped = 0

    def initialize(self):
        super().initialize()
        eio = self.server.eio
        self.fast = eio.async_mode == "eventlet"
        if self.fast:
            eio._async = {**eio._async, "websocket": _remembering(eio._async["websocket"])}
        self.pinger = SharedPinger(eio)
        on_connect = eio.handlers.get("connect")

        def connect(eio_sid, environ, *args):
            # Runs before engine.io schedules the first ping of this connection.
            eio_socket = eio.sockets.get(eio_sid)
            if eio_socket is not None:
                eio_socket.schedule_ping = lambda: self.pinger.schedule(eio_socket)
            return on_connect(eio_sid, environ, *args) if on_connect else None

        eio.on("connect", connect)

    def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None,
             **kwargs):
        room = to or room
        if not self.fast or room is not None or skip_sid or callback or namespace not in self.rooms:
            return super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                                callback=callback, **kwargs)
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event] + args).encode()
        if not isinstance(encoded, str):  # binary attachments: let engine.io handle them
            return super().emit(event, data, namespace, callback=callback, **kwargs)
        pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        frame = websocket_frame(pkt.encode())
        sockets = self.server.eio.sockets
        fast = slow = 0
        laggards = []
        for _sid, eio_sid in self.get_participants(namespace, None):
            eio_socket = sockets.get(eio_sid)
            if eio_socket is not None and _write_now(eio_socket, frame):
                fast += 1
            elif eio_socket is not None and eio_socket.queue.qsize() >= MAX_BACKLOG:
                laggards.append(eio_sid)
            else:
                slow += 1
                self.server._send_eio_packet(eio_sid, pkt)  # what Manager.emit does per client
        self.fast_sends += fast
        self.slow_sends += slow
        if laggards:
            self.laggards_dropped += len(laggards)
            log.warning("disconnecting %d client(s) %d packets behind; they can reconnect and resume",
                        len(laggards), MAX_BACKLOG)
            for eio_sid in laggards:
                _hang_up(sockets[eio_sid], self.server.eio.reason.SERVER_DISCONNECT)


class FastManager(FastBroadcast, Manager):
    """The in-process client manager, with the fast broadcast."""


PING_FRAME = websocket_frame(eio_packet.Packet(eio_packet.PING).encode())


class SharedPinger:
    """One task sends every client its Engine.IO pings.

    engine.io starts a task per client that sleeps through each ping interval: thousands
    of sleeping tasks, each with its own stack, to do one small thing every 25 seconds.
    Here a socket's `schedule_ping` (called by engine.io after the handshake and after
    each pong) just records when the next ping is due, and one task sends them.
    """

    RESOLUTION = 0.5  # seconds; pings go out at most this late

    def __init__(self, eio) -> None:
        self.eio = eio
        # Every socket waits the same interval, so appending keeps this in due order.
        # Sids, not sockets: a closed socket is not kept alive until its ping would be due.
        self.due: deque[tuple[float, str]] = deque()
        eio.start_background_task(self.run)

    def schedule(self, eio_socket) -> None:
        if eio_socket.last_ping:  # the previous ping was answered (as engine.io checks)
            eio_socket.last_ping = None
            self.due.append((time.monotonic() + self.eio.ping_interval, eio_socket.sid))

    def run(self) -> None:
        due = self.due
        while True:
            self.eio.sleep(self.RESOLUTION)
            now = time.monotonic()
            while due and due[0][0] <= now:
                eio_socket = self.eio.sockets.get(due.popleft()[1])
                if eio_socket is None or eio_socket.closing or eio_socket.closed:
                    continue
                try:
                    eio_socket.last_ping = time.time()
                    if not _write_now(eio_socket, PING_FRAME):  # as broadcasts: direct if free
                        eio_socket.send(eio_packet.Packet(eio_packet.PING))
                except Exception:  # one broken socket must not stop everyone's pings
                    log.exception("ping failed; the pinger goes on")


def _write_now(eio_socket, frame: bytes) -> bool:
    """Write the whole frame now without blocking, or do nothing and return False."""
    ws = getattr(eio_socket, "fast_websocket", None)
    if ws is None or eio_socket.closed or eio_socket.upgrading or eio_socket.queue.qsize():
        return False
    lock = ws._sendlock
    if not lock.acquire(blocking=False):  # the writer task is mid-frame
        return False
    try:
        sent = ws.socket.fd.send(frame)  # the raw non-blocking socket under eventlet's
    except BlockingIOError:
        sent = 0
    except OSError:
        lock.release()
        return False  # closing: the normal path notices and cleans up
    if sent == len(frame):
        lock.release()
        return True
    if sent == 0:
        lock.release()
        return False
    # Part of the frame is in the kernel: finish it before anything else may be sent.
    import eventlet

    eventlet.spawn_n(_finish, ws, frame[sent:], lock)
    return True


def _hang_up(eio_socket, reason) -> None:
    """Drop a connection now: engine.io's disconnect() would wait for the queue to drain,
    which never happens for a client that stopped reading, and block the ticker with it."""
    ws = eio_socket.fast_websocket
    eio_socket.close(wait=False, abort=True, reason=reason)
    if ws is not None:
        try:
            ws.socket.fd.shutdown(socket.SHUT_RDWR)  # unblocks its reader and writer tasks
        except OSError:
            pass


def _finish(ws, rest: bytes, lock) -> None:
    try:
        ws.socket.sendall(rest)
    except OSError:
        # Half a frame went out: nothing after it could be parsed, so end the connection.
        try:
            ws.socket.fd.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    finally:
        lock.release()


def _remembering(websocket_class):
    """Wrap engine.io's WebSocket WSGI class so each engine.io socket keeps its WebSocket."""

    class RememberingWebSocket(websocket_class):
        def __init__(self, handler, server):
            eio_socket = handler.__self__

            def remember(ws):
                eio_socket.fast_websocket = ws
                try:
                    return handler(ws)
                finally:
                    eio_socket.fast_websocket = None

            super().__init__(remember, server)

        def __call__(self, environ, start_response):
            # Deflate would cost ~300 KB of zlib state per client to shrink 60-byte messages.
            environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
            return super().__call__(environ, start_response)

    return RememberingWebSocket
