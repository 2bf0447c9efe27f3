"""What both runtimes' direct WebSocket path share: the write-through queue, the reader and
the two-step ending (randstream/transport/eventlet.py, gevent.py), around the sans-I/O
RFC 6455 protocol (protocol.py).

engine.io serves each WebSocket client with two tasks for its whole life: a reader (the
HTTP server's connection task, with the full WSGI call stack under it) and a writer
waiting on a queue. Thousands of idle clients then cost about 50 KB each, mostly stacks
and buffers, and every pong wakes a task. Here, for clients that open on WebSocket:
- writes go through: whoever sends a packet frames it and writes it with one
  non-blocking send. Only what the kernel cannot take at once waits, in order, and a
  short-lived task drains it;
- reads are a callback of the runtime's event loop on the socket: what arrives is fed to
  the protocol, what it answers (pongs, a close frame) is written, a pong packet is
  handled on the spot, other messages are handed, in order, to a short-lived task that
  runs engine.io's receive();
- the HTTP connection task ends after the handshake when the server allows it (the
  runtime's http_protocol offers a Detach); elsewhere it waits for the connection to end.
The loop's callback never waits: anything that might (engine.io's receive, the
disconnect handlers) runs in a task, except a pong, which only notes when the next ping
is due.

A runtime module subclasses Connection with the loop-specific parts: `_watch` (call
`_readable` when the socket has data), `_unwatch`, `_later` (a cancellable timer) and
`raw_socket` (the non-blocking socket under its green one); and supplies `take_over`,
which makes the library's WebSocket object let go of the connection.
"""

from __future__ import annotations

import enum
import logging
import socket
import time
import types
from collections import deque
from urllib.parse import parse_qs

from engineio import exceptions
from engineio import packet as eio_packet

from .protocol import OPEN as PROTOCOL_OPEN
from .protocol import PROTOCOL_ERROR, ServerProtocol, binary_frame, close_frame, websocket_frame

log = logging.getLogger(__name__)

DETACH = "random_stream.detach"  # environ: a Detach, if the server can let go of a connection


class Detach:
    """A server's offer to end a connection's task without closing the connection.

    An object, not an environ flag: middleware (Flask-SocketIO's among them) passes a
    copy of environ on, and the server only sees its own.
    """

    __slots__ = ("requested", "socket")

    def __init__(self, sock=None) -> None:
        self.requested = False
        self.socket = sock  # the connection's, where the driver needs it (gevent)


PONG = eio_packet.Packet(eio_packet.PONG)
RECV_SIZE = 65536
MAX_PENDING = 512  # frames waiting for a client that does not read; then it is cut off
LINGER = 5.0  # seconds a closed connection waits for the client to close its side


class Phase(enum.Enum):
    """Where a Connection is in its life; ending takes two steps, closing then released."""

    OPEN = "open"  # reading messages, writing frames (before open(), frames wait)
    CLOSING = "closing"  # no more reading or new writes: the frame under way, then the close frame
    PEER_CLOSED = "peer closed"  # closing, and the client closed its side meanwhile
    HALF_CLOSED = "half-closed"  # all written, our side shut: waiting for the client's
    RELEASED = "released"  # the socket closed and the loop no longer watching it


OPEN, CLOSING, PEER_CLOSED, HALF_CLOSED, RELEASED = Phase


def opens_on_websocket(environ) -> bool:
    """Whether this Engine.IO handshake asks for the WebSocket transport (as engine.io reads it)."""
    query = parse_qs(environ.get("QUERY_STRING", ""))
    return query.get("transport", ["polling"])[0] == "websocket"


def adopt(eio_socket, connection_class) -> None:
    """Serve a new engine.io socket that opens on WebSocket with a Connection."""
    old = eio_socket.queue
    connection = connection_class(eio_socket)
    while old.qsize():  # the OPEN packet, put before the connect handler ran
        connection.put(old.get(block=False))
        old.task_done()
    eio_socket.queue = connection
    # An instance attribute: engine.io's _upgrade_websocket looks it up on the socket.
    eio_socket._websocket_handler = types.MethodType(serve_websocket, eio_socket)


def serve_websocket(eio_socket, ws) -> list:
    """engine.io's Socket._websocket_handler for a connection that opens on WebSocket."""
    del eio_socket._websocket_handler  # used; it would keep the socket in a reference cycle
    eio_socket.connected = True
    eio_socket.upgraded = True
    connection = eio_socket.queue
    if not connection.take_over(ws):  # some other server: keep its task until the end
        connection.ended = eio_socket.server.create_event()
    connection.open(ws.socket, getattr(ws, "screen", None))
    if connection.ended is not None:
        connection.ended.wait()
    return []


class FrameWriter:
    """A socket written through with whole frames, and ended in two steps.

    `busy` is False only while a frame may be written at once: the socket is open,
    nothing is waiting and no task (`draining`) is writing. The broadcast's check is that
    attribute. Ending has two steps (`phase`): closing (no more reading of messages or new
    writes; the frame being written finishes, then the close frame, then our side is
    half-closed) and released (the socket closed and the loop no longer watching it).
    A subclass supplies the runtime's part and what closing means for its reading
    (`_closing`) and for engine.io (`_engine_closed`).
    """

    __slots__ = ("eio", "phase", "pending", "busy", "draining", "sock", "raw", "send_now",
                 "listener", "linger_timer", "ended")

    def __init__(self, eio) -> None:
        self.eio = eio  # the engine.io server: its tasks run the drainer
        self.phase = OPEN
        self.pending: list[bytes | None] = []  # None: close after what is before it
        self.busy = True  # until open()
        self.draining = False
        self.sock = None  # the runtime's green socket, for waiting writes and closing
        self.raw = None  # the non-blocking socket under it: reads, sends that never wait
        self.send_now = None  # its send
        self.listener = None
        self.linger_timer = None
        self.ended = None  # an Event, when a task waits for the end

    def put_frame(self, frame: bytes | None) -> bool:
        """Write `frame` now if the socket takes it whole; else queue it. True if written."""
        if not self.busy:
            if frame is None:  # engine.io closed the socket, and nothing waits
                self._engine_closed()
                return False
            try:
                frame = self._write_now(frame)  # the rest must go before anything else
            except OSError:  # the peer is gone
                self.cut()
                return False
            if not frame:
                return True
        if self.phase is not OPEN:
            return False
        if len(self.pending) >= MAX_PENDING:  # a client that sends but never reads
            self.cut()
            return False
        self.pending.append(frame)
        if self.sock is not None and not self.draining:
            self.busy = self.draining = True
            self.eio.start_background_task(self._drain)
        return False

    def _write_now(self, frame: bytes) -> bytes:
        """Write what the socket takes of `frame` at once; the rest (b"" if all of it went).
        OSError if the peer is gone."""
        try:
            sent = self.send_now(frame)
        except BlockingIOError:
            sent = 0
        return frame[sent:]

    def _drain(self) -> None:
        """Write the waiting frames in order, waiting for room; at a None, close. Once
        closing, what close() left (a frame under way, the close frame) still goes out."""
        try:
            while self.pending and self.phase is not RELEASED:
                frame = self.pending[0]
                if frame is None:
                    del self.pending[0]
                    self._engine_closed()
                    continue
                self.sock.sendall(frame)  # green: waits for room, up to the socket timeout
                if self.pending and self.pending[0] is frame:  # (close() may have emptied it)
                    del self.pending[0]  # at most MAX_PENDING: a deque would cost 600 B a client
        except OSError:  # gone, or stuck past the timeout
            self.cut()
        finally:
            self.draining = False
            phase = self.phase
            self.busy = phase is not OPEN  # unless it is closing, frames go straight out again
            if phase is RELEASED:
                self.sock.close()  # release() left that to this task
                self._let_go()
            elif phase is PEER_CLOSED:
                self.release()
            elif phase is CLOSING:
                self._half_close()

    # The runtime's part (eventlet.py, gevent.py).

    def raw_socket(self, green_socket):
        """The non-blocking socket under `green_socket`, for sends that never wait."""
        raise NotImplementedError

    def _watch(self) -> None:
        """Have the event loop call self._readable() whenever the socket has data."""
        raise NotImplementedError

    def _unwatch(self) -> None:
        """Stop _watch's callbacks (self.listener), if any."""
        raise NotImplementedError

    def _later(self, seconds: float, function):
        """Call `function` from the event loop in `seconds`; the result has cancel()."""
        raise NotImplementedError

    # Ending.

    def cut(self) -> None:
        """Drop what waits and cut the connection now; the reader then finishes it."""
        self.pending.clear()
        self.busy = True
        if self.sock is not None:
            try:
                self.raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self, frame: bytes | None = None) -> None:
        """Stop reading messages and taking frames. The frame being written finishes (a
        frame cut short would garble the close frame after it), the rest waiting is
        dropped, `frame` (a close frame) goes last; then half-close, so that all of it
        arrives, and release the socket once the client has closed its side."""
        if self.phase is not OPEN:
            return
        self.phase, self.busy = CLOSING, True
        del self.pending[1 if self.draining else 0:]
        if frame is not None:
            self.pending.append(frame)
        self._closing()
        if self.sock is None:
            return self.release()
        # A client that never reads, or never closes its side, is let go after LINGER seconds.
        self.linger_timer = self._later(LINGER, self.release)
        if self.draining:
            return  # the drainer half-closes after the last frame
        if self.pending == [frame]:  # the close frame alone: at once, if it fits
            try:
                rest = self._write_now(frame)
            except OSError:  # gone: the drainer finds out
                rest = frame
            self.pending[:] = [rest] if rest else []
        if self.pending:
            self.draining = True
            self.eio.start_background_task(self._drain)
            return
        self._half_close()

    def _closing(self) -> None:
        """close() began: the subclass stops reading and handing on messages."""

    def _engine_closed(self) -> None:
        """A None in the queue (engine.io closed the socket): our close frame goes last."""
        self.close(close_frame())

    def _half_close(self) -> None:
        if self.phase is not CLOSING:
            return
        self.phase = HALF_CLOSED
        try:
            self.raw.shutdown(socket.SHUT_WR)
        except OSError:
            self.release()

    def _peer_closed(self) -> None:
        """Closing, the client closed its side: release now, or once our last frames are out."""
        if self.draining:
            self.phase = PEER_CLOSED
            self._stop_listening()
        else:
            self.release()

    def release(self) -> None:
        """Close the socket; the loop stops watching it."""
        if self.phase is RELEASED:
            return
        self.phase, self.busy = RELEASED, True
        if self.linger_timer is not None:
            self.linger_timer.cancel()
            self.linger_timer = None
        self._stop_listening()
        if self.sock is not None:
            try:
                self.raw.shutdown(socket.SHUT_RDWR)  # wakes a drainer waiting for room
            except OSError:
                pass
            if not self.draining:  # else the drainer closes it as it ends
                self.sock.close()
                self._let_go()
        if self.ended is not None:
            self.ended.set()

    def _let_go(self) -> None:
        # Closed: engine.io's service task may hold the session for a ping timeout more.
        self.sock = self.raw = self.send_now = None

    def _stop_listening(self) -> None:
        if self.listener is not None:
            self._unwatch()
            self.listener = None


class Connection(FrameWriter):
    """One WebSocket client: engine.io's queue for it, written through (FrameWriter); its
    reader, which feeds the protocol; and the delivery of its messages to engine.io."""

    __slots__ = ("eio_socket", "protocol", "screen", "inbox", "delivering", "discarded")

    def __init__(self, eio_socket) -> None:
        super().__init__(eio_socket.server)
        self.eio_socket = eio_socket
        self.protocol = ServerProtocol(self.eio.max_http_buffer_size)
        self.screen = None
        self.inbox: list[str | bytes] = []
        self.delivering = False
        self.discarded = 0  # bytes read after closing

    # engine.io's side: Socket.send() and close() put Packets and a final None.

    def put(self, pkt) -> None:
        if pkt is None:
            self.put_frame(None)
            return
        data = pkt.encode()
        self.put_frame(binary_frame(data) if isinstance(data, bytes) else websocket_frame(data))

    def qsize(self) -> int:
        return len(self.pending)

    def join(self) -> None:
        """close(wait=True): until what was put is written or the connection ended."""
        while self.draining and self.phase is not RELEASED:
            self.eio.sleep(0.05)

    def get(self, block=True, timeout=None):  # polling only; never on a WebSocket
        raise self.eio.get_queue_empty_exception()()

    def task_done(self) -> None:
        pass

    def open(self, green_socket, screen=None) -> None:
        """The handshake is done: write what was put before, then read and write through.
        `screen(data) -> bool` may refuse a message before engine.io sees it (close, 1002)."""
        self.sock = green_socket
        # A writer waiting for room gives up after this long (engine.io's own choice).
        green_socket.settimeout(self.eio.ping_interval + self.eio.ping_timeout)
        self.raw = self.raw_socket(green_socket)
        self.send_now = self.raw.send
        self.screen = screen
        self._watch()
        self.busy = False
        # What engine.io put before (its OPEN packet) goes out now, as a frame put now
        # would; only what the kernel cannot take at once waits for a drainer.
        waiting, self.pending = self.pending, []
        for frame in waiting:
            self.put_frame(frame)

    def take_over(self, ws) -> bool:
        """Make the library's WebSocket object `ws` leave the connection to us; True if
        the HTTP connection's task may end (the server offered a Detach). The runtime's."""
        raise NotImplementedError

    # Reading: a callback of the event loop, so no task waits on each client.

    def _readable(self, *_) -> None:
        try:
            data = self.raw.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if self.phase is not OPEN:  # only waiting for the client to close its side
            if not data:
                self._peer_closed()
            else:  # read and thrown away; a client that keeps sending is let go at once
                self.discarded += len(data)
                if self.discarded > RECV_SIZE:
                    self.release()
            return
        try:
            if not data:
                self.protocol.receive_eof()
                self.finish(self.eio.reason.TRANSPORT_CLOSE)
                return
            protocol = self.protocol
            for message in protocol.receive_data(data, time.monotonic()):
                self._message(message)
                if self.phase is not OPEN:  # refused by the screen
                    return
            if protocol.outgoing:  # pongs; a close frame last if the client closed or broke a rule
                self._answer(protocol.data_to_send())
        except Exception:  # never into the hub, which would print it and drop the socket
            log.exception("WebSocket read failed; closing that connection")
            self.finish(self.eio.reason.TRANSPORT_ERROR)

    def _answer(self, frames: list[bytes]) -> None:
        protocol = self.protocol
        if protocol.state is PROTOCOL_OPEN:
            for frame in frames:
                self.put_frame(frame)
            return
        for frame in frames[:-1]:
            self.put_frame(frame)
        reason = self.eio.reason
        self.finish(reason.CLIENT_DISCONNECT if protocol.closed_by_client else reason.TRANSPORT_ERROR,
                    frames[-1])

    def _gone(self, *args) -> None:
        self.finish(self.eio.reason.TRANSPORT_CLOSE)
        self.release()

    def _message(self, data: str | bytes) -> None:
        if self.screen is not None and not self.screen(data):
            return self.refuse(PROTOCOL_ERROR)
        if data == "3" and not self.inbox:  # a pong: cheap and ours, handled right here
            self.eio_socket.receive(PONG)
            return
        self.inbox.append(data)
        if not self.delivering:
            self.delivering = True
            PACER.start(self.eio, self._deliver)

    def _deliver(self) -> None:
        """engine.io's receive() for each waiting message, in order, in a task of its own
        (handlers may wait, which the hub cannot)."""
        try:
            while self.inbox and self.phase is OPEN:
                data = self.inbox.pop(0)
                try:
                    self.eio_socket.receive(eio_packet.Packet(encoded_packet=data))
                except exceptions.UnknownPacketError:
                    pass
                except exceptions.SocketIsClosedError:
                    self.finish(self.eio.reason.TRANSPORT_CLOSE)
                except Exception:
                    log.exception("could not handle a packet; closing that connection")
                    self.finish(self.eio.reason.TRANSPORT_ERROR)
        finally:
            self.delivering = False

    # Ending.

    def refuse(self, code: int) -> None:
        """A message broke our rules (the screen's): say why in a close frame, then end.
        (Before any rule the protocol found broken after it, in the same read.)"""
        self.finish(self.eio.reason.TRANSPORT_ERROR, close_frame(code))

    def finish(self, reason, frame: bytes | None = None) -> None:
        """The connection ended on the client's side: close (`frame` last), then tell engine.io."""
        if self.phase is not OPEN:
            return
        self.close(frame)
        # In a task: this often runs in the hub's callback, where the disconnect handlers
        # could not wait for anything (a lock, a message queue) if they ever had to.
        PACER.start(self.eio, self._disconnected, reason)

    def _closing(self) -> None:
        """close() began: no message is handed on, nothing more is read."""
        self.inbox.clear()
        self.protocol.close()  # its buffers go; its close frame, if any, was taken already

    def _engine_closed(self) -> None:
        super()._engine_closed()
        self._forget()

    def _disconnected(self, reason) -> None:
        if self.eio_socket is None:  # engine.io closed it first, and the drainer let it go
            return
        self.eio_socket.close(wait=False, abort=True, reason=reason)  # the disconnect event
        self._forget()

    def _forget(self) -> None:
        """engine.io is done with this socket: drop it, and the reference cycle through it,
        so that both go now rather than at the next full garbage collection."""
        if self.eio_socket is None:
            return
        self.eio.sockets.pop(self.eio_socket.sid, None)
        self.eio_socket = None


class Pacer:
    """Tasks started from the event loop's callbacks, at most BATCH to a turn of the loop.

    A herd that drops at once ends thousands of connections in one turn of the loop, and
    one that comes back sends thousands of CONNECT packets within a few: each is a task
    (a disconnect, a delivery: ~0.2-0.3 ms of python-socketio's and Flask-SocketIO's
    work). Started at once they would all run in the next turn: a second with 5,000,
    during which no tick went out and no /healthz was answered. Here they wait in one
    line and start BATCH at a time; each still runs in a task of its own, so one that
    waits (a lock, a message queue) keeps no other waiting.
    """

    BATCH = 32  # tasks started per turn of the loop: ~10 ms of work

    def __init__(self) -> None:
        self.waiting: deque = deque()  # (function, args), in the order they were asked for
        self.running = False

    def start(self, eio, function, *args) -> None:
        """Run `function(*args)` in a task of `eio`'s (engine.io's server), in turn."""
        self.waiting.append((function, args))
        if not self.running:
            self.running = True
            eio.start_background_task(self._run, eio)

    def _run(self, eio) -> None:
        try:
            while self.waiting:
                for _ in range(min(self.BATCH, len(self.waiting))):
                    function, args = self.waiting.popleft()
                    eio.start_background_task(function, *args)
                eio.sleep(0)  # they run; the ticker, the accept loop and the rest too
        finally:
            self.running = False


PACER = Pacer()  # one event loop per process: one line for its direct WebSockets


def _noop(*args) -> None:
    pass
