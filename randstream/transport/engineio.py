"""engine.io and python-socketio internals, for every async mode, behind named functions.

Broadcast fan-out: encode a packet once, write the same WebSocket frame to every client.
python-socketio already encodes a broadcast once, then hands each recipient to engine.io,
which queues it for a per-client writer task that frames and sends it: a queue put, a task
switch, a frame and a send for every client, about 80 us of CPU per client under eventlet.
Here the frame is built once and handed to each client's write-through queue (the runtime
module, eventlet.py or gevent.py, on websocket.py): one non-blocking send per client, or a place in that client's queue
if the kernel cannot take it at once.

Extension points used (EXTENSION_POINTS and REQUIRED below, checked at start; each has a
test in tests/test_transport.py that fails if an upgrade moves it):
- a custom client manager, the documented way to change how python-socketio delivers
  (FastManager here);
- the manager's room bookkeeping, `basic_enter_room`, `basic_leave_room` and
  `basic_disconnect` (RoomIndex: a disconnect visits the client's rooms only);
- engine.io's `connect` handler and the socket's `schedule_ping`, for the shared pinger;
- the engine.io server's `_async["websocket"]` class, wrapped (wrap_websocket_driver) to
  refuse compression and to screen frames;
- its `handlers`, `sockets` and python-socketio's `_send_eio_packet`.
Only eventlet and gevent clients that open on WebSocket are fast-pathed; the rest use the
normal path.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque

from engineio import packet as eio_packet
from socketio import Manager
from socketio import packet as sio_packet

from .protocol import websocket_frame
from .websocket import Connection

log = logging.getLogger(__name__)

# Packets a client may have waiting before it is cut off: it then reconnects and resumes,
# instead of holding an ever-growing queue in this process.
MAX_BACKLOG = 256


class FastBroadcast:
    """Mixin for a python-socketio client manager: the fast path for plain broadcasts."""

    runtime = None  # the runtime module (eventlet.py, gevent.py) whose clients get the direct path
    pinger = None  # the SharedPinger, from the first connection on
    fast_sends = 0
    slow_sends = 0
    laggards_dropped = 0

    @property
    def fast(self) -> bool:
        return self.runtime is not None

    def engine_connected(self, eio_sid, environ, *args):
        # Runs after engine.io made the socket, before it schedules the first ping
        # and before it writes anything to the client (chained by randstream.transport).
        eio_socket = self.server.eio.sockets.get(eio_sid)
        if eio_socket is not None:
            # By sid: a closure over the socket would keep it in a reference cycle.
            eio_socket.schedule_ping = functools.partial(self.schedule_ping, eio_sid)
            if self.fast and self.runtime.opens_on_websocket(environ):
                self.runtime.adopt(eio_socket)

    def initialize(self):
        super().initialize()
        self.start_pinger()

    def start_pinger(self) -> SharedPinger:
        """The pinger, started once. python-socketio calls initialize() with the first
        connection, but under threads (gunicorn --threads) the first connections race it:
        the others go on once its flag is set, before it returns, and ask for the pinger."""
        with self._pinger_lock:
            if self.pinger is None:
                self.pinger = SharedPinger(self.server.eio)
        return self.pinger

    def schedule_ping(self, eio_sid: str) -> None:
        (self.pinger or self.start_pinger()).schedule(eio_sid)

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
        direct = self.runtime.Connection  # the runtime's class: one identity test a client
        for _sid, eio_sid in self.get_participants(namespace, None):
            eio_socket = sockets.get(eio_sid)
            if eio_socket is None:
                continue
            queue = eio_socket.queue
            if queue.__class__ is not direct:
                slow += 1
                self.server._send_eio_packet(eio_sid, pkt)  # what Manager.emit does per client
            elif queue.put_frame(frame):
                fast += 1
            elif len(queue.pending) > MAX_BACKLOG:
                laggards.append(eio_socket)
            else:
                slow += 1
        self.fast_sends += fast
        self.slow_sends += slow
        if laggards:
            self.laggards_dropped += len(laggards)
            log.warning("disconnecting %d client(s) %d packets behind; they can reconnect and resume",
                        len(laggards), MAX_BACKLOG)
            for eio_socket in laggards:
                eio_socket.close(wait=False, abort=True, reason=self.server.eio.reason.SERVER_DISCONNECT)
                eio_socket.queue.cut()  # drop its backlog now; it never drains


class RoomIndex:
    """Mixin for a python-socketio client manager: a disconnect visits the client's rooms only.

    python-socketio's basic_disconnect copies the namespace's rooms and looks for the sid
    in each; every client has a room of its own, so one disconnect is N steps at N clients
    and closing them all N^2. Every client is in two rooms, the namespace's None room and
    its own sid room; the others it entered are indexed here (a client in no other room
    costs nothing). basic_enter_room and basic_leave_room (which basic_close_room goes
    through) keep the index; basic_disconnect is the library's, without the scan. What
    they may touch is checked at start (engineio_checks.py).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.entered: dict[tuple, set] = {}  # (namespace, sid) -> its rooms but None and its own

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        # First: pre_connect relies on it raising for an engine.io session already connected.
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room is not None and room != sid:
            self.entered.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid, namespace, room):
        super().basic_leave_room(sid, namespace, room)
        rooms = self.entered.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self.entered[(namespace, sid)]

    def basic_disconnect(self, sid, namespace, **kwargs):
        if namespace not in self.rooms:
            return
        rooms = self.rooms[namespace]
        # The rooms it is in (it may have left its own), None last: it stays connected
        # until the others are left.
        for room in [*self.entered.pop((namespace, sid), ()), sid, None]:
            if sid in rooms.get(room, ()):
                self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for name in ("pending_connect", "pending_disconnect"):  # 5.16 has no pending_connect
            pending = getattr(self, name, {})
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    def get_rooms(self, sid, namespace):
        own = self.rooms.get(namespace, {}).get(sid)
        return ([sid] if own is not None and sid in own else []) + list(
            self.entered.get((namespace, sid), ()))


class FastManager(FastBroadcast, RoomIndex, Manager):
    """The in-process client manager, with the fast broadcast and the room index."""

    def __init__(self, runtime=None) -> None:
        super().__init__()
        self.runtime = runtime
        self._pinger_lock = threading.Lock()


PING_FRAME = websocket_frame(eio_packet.Packet(eio_packet.PING).encode())


class SharedPinger:
    """One task sends every client its Engine.IO pings.

    engine.io starts a task per client that sleeps through each ping interval: thousands
    of sleeping tasks, each with its own stack, to do one small thing every 25 seconds.
    Here a socket's `schedule_ping` (called by engine.io after the handshake and after
    each pong) just records when the next ping is due, and one task sends them.
    """

    # Seconds between rounds (at most a tenth of the interval). A ping due before the next
    # round goes out in this one: up to this early, never late (a client waits
    # pingInterval + pingTimeout after a ping, then gives up).
    RESOLUTION = 0.5

    def __init__(self, eio) -> None:
        self.eio = eio
        # Every socket waits the same interval, so appending keeps this in due order.
        # Sids, not sockets: a closed socket is not kept alive until its ping would be due.
        self.due: deque[tuple[float, str]] = deque()
        self.resolution = min(self.RESOLUTION, eio.ping_interval / 10)
        eio.start_background_task(self.run)

    def schedule(self, eio_sid: str) -> None:
        eio_socket = self.eio.sockets.get(eio_sid)
        if eio_socket is not None and eio_socket.last_ping:  # the previous ping was answered
            eio_socket.last_ping = None
            self.due.append((time.monotonic() + self.eio.ping_interval, eio_sid))

    def run(self) -> None:
        due = self.due
        while True:
            self.eio.sleep(self.resolution)
            soon = time.monotonic() + self.resolution
            while due and due[0][0] <= soon:
                eio_socket = self.eio.sockets.get(due.popleft()[1])
                if eio_socket is None or eio_socket.closing or eio_socket.closed:
                    continue
                try:
                    eio_socket.last_ping = time.time()
                    if isinstance(eio_socket.queue, Connection):
                        eio_socket.queue.put_frame(PING_FRAME)  # framed once for everyone
                    else:
                        eio_socket.send(eio_packet.Packet(eio_packet.PING))
                except Exception:  # one broken socket must not stop everyone's pings
                    log.exception("ping failed; the pinger goes on")


def uncompressed(websocket_class):
    """engine.io's WebSocket WSGI class, refusing permessage-deflate."""

    class UncompressedWebSocket(websocket_class):
        def __call__(self, environ, start_response):
            # Deflate would cost ~300 KB of zlib state per client to shrink 60-byte messages,
            # and the broadcast writes one uncompressed frame for everyone.
            environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
            return super().__call__(environ, start_response)

    return UncompressedWebSocket


# Named adapters: what the rest of the code uses instead of engine.io's attributes ------------

class Prepared:
    """An event encoded once for sending to clients one at a time: its Engine.IO packet,
    and the WebSocket frame that the direct path writes as it is."""

    __slots__ = ("packet", "frame")

    def __init__(self, packet: eio_packet.Packet) -> None:
        self.packet = packet
        self.frame = websocket_frame(packet.encode())


def send_prepared(server, eio_sid: str | None, prepared: Prepared) -> None:
    """Send a prepared event to one client: its frame as it is on the direct path."""
    if eio_sid is None:  # gone before its answer was ready
        return
    eio_socket = engine_socket(server.eio, eio_sid)
    if eio_socket is not None and eio_socket.closed:
        return
    if eio_socket is not None and isinstance(eio_socket.queue, Connection):
        eio_socket.queue.put_frame(prepared.frame)
    else:  # what Server.emit ends in (Flask-SocketIO's test client catches it there too)
        send_encoded_packet(server, eio_sid, prepared.packet)


def send_encoded_packet(server, eio_sid: str, pkt: eio_packet.Packet) -> None:
    """Send an already encoded Engine.IO packet to one client (what Server.emit ends in)."""
    server._send_eio_packet(eio_sid, pkt)


def current_handler(eio, event: str):
    """engine.io's handler for `event` now (python-socketio's, or a wrapper of it), or None."""
    return eio.handlers.get(event)


def chain_handler(eio, event: str, first) -> None:
    """Run `first(*args)` before engine.io's current `event` handler, then that handler."""
    then = current_handler(eio, event)

    def chained(*args):
        first(*args)
        return then(*args) if then else None

    eio.on(event, chained)


def has_event_handler(server, namespace: str | None, event: str) -> bool:
    """Whether python-socketio has a handler for `event` (dispatching spawns a task anyway)."""
    return event in server.handlers.get(namespace or "/", {})


def wrap_websocket_driver(eio, *wrappers) -> None:
    """Wrap engine.io's WebSocket driver class on this server only, innermost first.

    engine.io's drivers are a shared module-level dict: the server gets its own copy.
    """
    driver = eio._async["websocket"]
    for wrap in wrappers:
        driver = wrap(driver)
    eio._async = {**eio._async, "websocket": driver}


def engine_socket(eio, eio_sid):
    """engine.io's socket for a session, or None (closed ones stay until engine.io reaps them)."""
    return eio.sockets.get(eio_sid)


def session_state(eio, eio_sid) -> str | None:
    """'open', 'closed' (not yet reaped) or None for an unknown session."""
    eio_socket = engine_socket(eio, eio_sid)
    if eio_socket is None:
        return None
    return "closed" if eio_socket.closed else "open"


def on_websocket(eio, eio_sid) -> bool:
    """Whether a session's packets go over a WebSocket now (opened on one, or upgraded)."""
    eio_socket = engine_socket(eio, eio_sid)
    return eio_socket is not None and bool(eio_socket.upgraded)


def open_sessions(eio) -> list[str]:
    """The sessions engine.io holds now, closed but unreaped ones included."""
    return list(eio.sockets)


def close_session(eio, eio_sid: str) -> None:
    """Close one session with a close packet, without waiting for its queue to drain."""
    eio_socket = engine_socket(eio, eio_sid)
    if eio_socket is not None:
        eio_socket.close(wait=False, abort=False, reason=eio.reason.SERVER_DISCONNECT)


def queued_packets(eio, eio_sid: str) -> int:
    """Packets queued for a client that it has not taken yet."""
    eio_socket = engine_socket(eio, eio_sid)
    return eio_socket.queue.qsize() if eio_socket is not None else 0

