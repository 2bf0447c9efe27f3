"""What both runtimes' direct WebSocket path share: RFC 6455 frames, the write-through
queue, the reader's parser and the two-step ending (randstream/transport/eventlet.py, gevent.py).

engine.io serves each WebSocket client with two tasks for its whole life: a reader (the
HTTP server's connection task, with the full WSGI call stack under it) and a writer
waiting on a queue. Thousands of idle clients then cost about 50 KB each, mostly stacks
and buffers, and every pong wakes a task. Here, for clients that open on WebSocket:
- writes go through: whoever sends a packet frames it and writes it with one
  non-blocking send. Only what the kernel cannot take at once waits, in order, and a
  short-lived task drains it;
- reads are a callback of the runtime's event loop on the socket: frames are parsed as
  they arrive, a pong is handled on the spot, other packets are handed, in order, to a
  short-lived task that runs engine.io's receive();
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

import logging
import socket
import time
import types
from urllib.parse import parse_qs

from engineio import exceptions
from engineio import packet as eio_packet

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
CLOSE_FRAME = b"\x88\x00"  # a WebSocket close frame without a status
RECV_SIZE = 65536
MAX_PENDING = 512  # frames waiting for a client that does not read; then it is cut off
MAX_FRAGMENTS = 64  # pieces of one message
LINGER = 5.0  # seconds a closed connection waits for the client to close its side
# WebSocket pings and pongs a client may send: per second, and at once. Browsers send none.
CONTROL_FRAME_RATE, CONTROL_FRAME_BURST = 2.0, 20
# RFC 6455 close codes sent when a client breaks the protocol.
PROTOCOL_ERROR, INVALID_DATA, POLICY, TOO_BIG = 1002, 1007, 1008, 1009


def websocket_frame(text: str) -> bytes:
    """An unmasked, final, uncompressed RFC 6455 text frame (the server-to-client form)."""
    return _frame(0x81, text.encode())


def _frame(first_byte: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((first_byte, n))
    elif n < 65536:
        header = bytes((first_byte, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first_byte, 127)) + n.to_bytes(8, "big")
    return header + payload


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR a client frame's payload with its 4-byte mask, as one big-integer operation."""
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")



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


class Connection:
    """One WebSocket client: engine.io's queue for it, its writer and its reader.

    `busy` is False only while a frame may be written at once: the socket is open,
    nothing is waiting and no task is writing. The broadcast's check is that attribute.
    Ending has two steps: `closing` (no more reading of messages or new writes; the frame
    being written finishes, then the close frame, then our side is half-closed) and
    `released` (the socket closed and the hub no longer watching it).
    """

    def __init__(self, eio_socket) -> None:
        self.eio_socket = eio_socket
        self.eio = eio_socket.server
        self.pending: list[bytes | None] = []  # None: close after what is before it
        self.sock = None  # the runtime's green socket, for waiting writes and closing
        self.raw = None  # the non-blocking socket under it: reads, sends that never wait
        self.send_now = None  # its send
        self.busy = True  # until open()
        self.draining = False
        self.closing = False
        self.released = False
        self.ended = None  # an Event, when a task waits for the end
        self.listener = None
        self.linger_timer = None
        self.screen = None
        self.unread = bytearray()  # received bytes not yet a whole frame
        self.fragments: list[bytes] = []  # the pieces so far of a message in pieces
        self.fragmented = 0  # that message's opcode, while it arrives
        self.inbox: list[str | bytes] = []
        self.delivering = False
        self.half_closed = False
        self.peer_closed = False  # the client closed its side while our last frames went out
        self.discarded = 0  # bytes read after closing
        self.control_tokens = float(CONTROL_FRAME_BURST)
        self.control_stamp = 0.0

    # engine.io's side: Socket.send() and close() put Packets and a final None.

    def put(self, pkt) -> None:
        if pkt is None:
            self.put_frame(None)
            return
        data = pkt.encode()
        self.put_frame(_frame(0x82, data) if isinstance(data, bytes) else websocket_frame(data))

    def qsize(self) -> int:
        return len(self.pending)

    def join(self) -> None:
        """close(wait=True): until what was put is written or the connection ended."""
        while self.draining and not self.released:
            self.eio.sleep(0.05)

    def get(self, block=True, timeout=None):  # polling only; never on a WebSocket
        raise self.eio.get_queue_empty_exception()()

    def task_done(self) -> None:
        pass

    # Writing.

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
        if self.closing:
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

    def _engine_closed(self) -> None:
        """engine.io closed the socket (its None in the queue): our close frame goes last."""
        self.close(CLOSE_FRAME)
        self._forget()

    def _drain(self) -> None:
        """Write the waiting frames in order, waiting for room; at a None, close. Once
        closing, what close() left (a frame under way, the close frame) still goes out."""
        try:
            while self.pending and not self.released:
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
            self.busy = self.closing  # unless it is closing, frames go straight out again
            if self.released:
                self.sock.close()  # release() left that to this task
            elif self.closing and self.peer_closed:
                self.release()
            elif self.closing:
                self._half_close()

    # Reading: a callback of the event loop, so no task waits on each client.

    def open(self, green_socket, screen=None) -> None:
        """The handshake is done: write what was put before, then read and write through."""
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

    def take_over(self, ws) -> bool:
        """Make the library's WebSocket object `ws` leave the connection to us; True if
        the HTTP connection's task may end (the server offered a Detach)."""
        raise NotImplementedError

    def _readable(self, *_) -> None:
        try:
            data = self.raw.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if self.closing:  # only waiting for the client to close its side
            if not data and self.draining:  # our last frames still go out; then release
                self.peer_closed = True
                self._stop_listening()
            elif not data:
                self.release()
            else:  # read and thrown away; a client that keeps sending is let go at once
                self.discarded += len(data)
                if self.discarded > RECV_SIZE:
                    self.release()
            return
        try:
            if not data:
                self.finish(self.eio.reason.TRANSPORT_CLOSE)
                return
            self.unread += data
            self._parse()
        except Exception:  # never into the hub, which would print it and drop the socket
            log.exception("WebSocket read failed; closing that connection")
            self.finish(self.eio.reason.TRANSPORT_ERROR)

    def _gone(self, *args) -> None:
        self.finish(self.eio.reason.TRANSPORT_CLOSE)
        self.release()

    def _parse(self) -> None:
        """Take every whole frame out of `unread` (RFC 6455, client to server: masked)."""
        buf, pos, limit = self.unread, 0, self.eio.max_http_buffer_size
        try:
            while not self.closing and len(buf) - pos >= 2:
                first, second = buf[pos], buf[pos + 1]
                fin, opcode, n = first & 0x80, first & 0x0F, second & 0x7F
                start = pos + 2
                if first & 0x70 or not second & 0x80 or (opcode >= 8 and (not fin or n > 125)):
                    return self.refuse(PROTOCOL_ERROR)  # extensions, unmasked, bad control
                if n == 126:
                    start, n = pos + 4, int.from_bytes(buf[pos + 2:pos + 4], "big")
                elif n == 127:
                    start, n = pos + 10, int.from_bytes(buf[pos + 2:pos + 10], "big")
                if n > limit:
                    return self.refuse(TOO_BIG)
                end = start + 4 + n
                if len(buf) < end:
                    return
                payload = unmask(bytes(buf[start + 4:end]), bytes(buf[start:start + 4]))
                pos = end
                if opcode >= 8:
                    self._control(opcode, payload)
                elif opcode == 0:
                    if not self.fragmented:
                        return self.refuse(PROTOCOL_ERROR)  # a continuation of nothing
                    self.fragments.append(payload)
                    if len(self.fragments) > MAX_FRAGMENTS or sum(map(len, self.fragments)) > limit:
                        return self.refuse(TOO_BIG)
                    if fin:
                        message, self.fragments = b"".join(self.fragments), []
                        opcode, self.fragmented = self.fragmented, 0
                        self._message(opcode, message)
                elif opcode in (1, 2):
                    if self.fragmented:
                        return self.refuse(PROTOCOL_ERROR)  # a new message inside another
                    if fin:
                        self._message(opcode, payload)
                    else:
                        self.fragments, self.fragmented = [payload], opcode
                else:
                    return self.refuse(PROTOCOL_ERROR)  # a reserved opcode
        finally:
            del buf[:pos]  # once per read, not per frame

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode in (0x9, 0xA) and not self._control_allowed():
            if _first("control"):
                log.warning("closed a WebSocket sending over %g pings/pongs a second "
                            "(further ones are not logged)", CONTROL_FRAME_RATE)
            return self.refuse(POLICY)
        if opcode == 0x9:  # ping: the same payload back
            self.put_frame(_frame(0x8A, payload))
        elif opcode == 0x8:  # close: answer with the same code, then end
            if len(payload) == 1 or (payload and not _valid_close(payload)):
                return self.refuse(PROTOCOL_ERROR)
            self.finish(self.eio.reason.CLIENT_DISCONNECT, _frame(0x88, payload[:2]))
        elif opcode != 0xA:  # 0xA, pong: nothing to do; 0xB-0xF are reserved
            self.refuse(PROTOCOL_ERROR)

    def _control_allowed(self) -> bool:
        """A token bucket for WebSocket pings and pongs: each costs a write or a wake-up."""
        now = time.monotonic()
        self.control_tokens = min(CONTROL_FRAME_BURST,
                                  self.control_tokens + (now - self.control_stamp) * CONTROL_FRAME_RATE)
        self.control_stamp = now
        if self.control_tokens < 1:
            return False
        self.control_tokens -= 1
        return True

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == 1:
            try:
                data = payload.decode()
            except UnicodeDecodeError:
                return self.refuse(INVALID_DATA)
        else:
            data = payload
        if self.screen is not None and not self.screen(data):
            return self.refuse(PROTOCOL_ERROR)
        if data == "3" and not self.inbox:  # a pong: cheap and ours, handled right here
            self.eio_socket.receive(PONG)
            return
        self.inbox.append(data)
        if not self.delivering:
            self.delivering = True
            self.eio.start_background_task(self._deliver)

    def _deliver(self) -> None:
        """engine.io's receive() for each waiting message, in order, in a task of its own
        (handlers may wait, which the hub cannot)."""
        try:
            while self.inbox and not self.closing:
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
        """The client broke the protocol: say why in a close frame, then end."""
        self.finish(self.eio.reason.TRANSPORT_ERROR, _frame(0x88, code.to_bytes(2, "big")))

    def finish(self, reason, close_frame: bytes | None = None) -> None:
        """The connection ended on the client's side: close, then tell engine.io."""
        if self.closing:
            return
        self.close(close_frame)
        # In a task: this often runs in the hub's callback, where the disconnect handlers
        # could not wait for anything (a lock, a message queue) if they ever had to.
        self.eio.start_background_task(self._disconnected, reason)

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

    def cut(self) -> None:
        """Drop what waits and cut the connection now; the reader then finishes it."""
        self.pending.clear()
        self.busy = True
        if self.sock is not None:
            try:
                self.raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self, close_frame: bytes | None = None) -> None:
        """Stop reading messages and taking frames. The frame being written finishes (a
        frame cut short would garble the close frame after it), the rest waiting is
        dropped, `close_frame` goes last; then half-close, so that all of it arrives, and
        release the socket once the client has closed its side."""
        if self.closing:
            return
        self.closing = self.busy = True
        del self.pending[1 if self.draining else 0:]
        if close_frame is not None:
            self.pending.append(close_frame)
        self.inbox.clear()
        self.fragments = []
        self.unread = bytearray()
        if self.sock is None:
            return self.release()
        # A client that never reads, or never closes its side, is let go after LINGER seconds.
        self.linger_timer = self._later(LINGER, self.release)
        if self.draining:
            return  # the drainer half-closes after the last frame
        if self.pending == [close_frame]:  # the close frame alone: at once, if it fits
            try:
                rest = self._write_now(close_frame)
            except OSError:  # gone: the drainer finds out
                rest = close_frame
            self.pending[:] = [rest] if rest else []
        if self.pending:
            self.draining = True
            self.eio.start_background_task(self._drain)
            return
        self._half_close()

    def _half_close(self) -> None:
        if self.half_closed or self.released:
            return
        self.half_closed = True
        try:
            self.raw.shutdown(socket.SHUT_WR)
        except OSError:
            self.release()

    def release(self) -> None:
        """Close the socket; the hub stops watching it."""
        if self.released:
            return
        self.closing = self.released = self.busy = True
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
        if self.ended is not None:
            self.ended.set()

    def _stop_listening(self) -> None:
        if self.listener is not None:
            self._unwatch()
            self.listener = None


_logged: set[str] = set()


def _first(kind: str) -> bool:
    """Whether this is the first event of its kind in this process (one log line each)."""
    if kind in _logged:
        return False
    _logged.add(kind)
    return True


def _valid_close(payload: bytes) -> bool:
    """A close frame's status code and reason as RFC 6455 allows a client to send them."""
    code = int.from_bytes(payload[:2], "big")
    if not (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) and not 3000 <= code <= 4999:
        return False
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        return False
    return True


def _noop(*args) -> None:
    pass

