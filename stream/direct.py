"""WebSocket clients without a writer task: whoever sends a packet writes it.

engine.io gives every WebSocket client a queue and a writer task that waits on it. Under
eventlet that task costs a greenlet, its own stack of Python frames and a timer for life,
about 20 KB per idle client, to move packets that can almost always be written at once.
Here the queue writes through: a packet is framed and written with one non-blocking send
by the task that sends it. Only what the kernel cannot take at once waits in the queue,
and a short-lived task drains it, in order, and ends.

The connection's reader is engine.io's, restated in `serve_websocket` without the writer.
Extension points used (tests/test_direct.py fails if an upgrade moves them):
- engine.io's `connect` handler runs after the socket is made, before its first write;
  `adopt` replaces the socket's `queue` and its `_websocket_handler` there;
- the socket's queue is used only through put(), qsize() and join() on a WebSocket;
- eventlet's WebSocket keeps its green socket in `.socket` (the raw one in `.socket.fd`)
  and takes `_sendlock` for its own writes (pongs, close frames).
Only clients that open on WebSocket under eventlet are adopted; polling clients, upgrades
from polling and the other async modes keep engine.io's queue and writer.
"""

from __future__ import annotations

import socket
import types
from urllib.parse import parse_qs

from engineio import exceptions
from engineio import packet as eio_packet


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


def opens_on_websocket(environ) -> bool:
    """Whether this Engine.IO handshake asks for the WebSocket transport (as engine.io reads it)."""
    query = parse_qs(environ.get("QUERY_STRING", ""))
    return query.get("transport", ["polling"])[0] == "websocket"


def adopt(eio_socket) -> None:
    """Give a new engine.io socket a write-through queue and a reader without a writer."""
    old = eio_socket.queue
    queue = DirectQueue(eio_socket.server)
    while old.qsize():  # the OPEN packet, put before the connect handler ran
        queue.put(old.get(block=False))
        old.task_done()
    eio_socket.queue = queue
    # An instance attribute: engine.io's _upgrade_websocket looks it up on the socket.
    eio_socket._websocket_handler = types.MethodType(serve_websocket, eio_socket)


class DirectQueue:
    """A WebSocket client's outgoing frames: written at once, or in order by a short task.

    `busy` is False only while a frame may be written at once: the WebSocket is open,
    nothing is waiting and no task is writing. That keeps the broadcast's check to one
    attribute and a lock test per client.
    """

    def __init__(self, eio) -> None:
        self.eio = eio
        self.pending: list[bytes | None] = []  # None: close after what is before it
        self.ws = None
        self.send_now = None  # the raw non-blocking socket's send
        self.busy = True  # until attach()
        self.ended = False
        self.drained = None  # an Event while a task is writing the waiting frames

    # What engine.io's Socket uses: put (send and close), qsize, join (close(wait=True)).

    def put(self, pkt) -> None:
        self.put_frame(None if pkt is None else websocket_frame(pkt.encode()))

    def qsize(self) -> int:
        return len(self.pending)

    def join(self) -> None:
        drained = self.drained
        if drained is not None:
            drained.wait()

    def get(self, block=True, timeout=None):  # polling only; never on a WebSocket
        raise self.eio.get_queue_empty_exception()()

    def task_done(self) -> None:
        pass

    # The write path.

    def put_frame(self, frame: bytes | None) -> bool:
        """Write `frame` now if the socket takes it whole; else queue it. True if written."""
        if not self.busy and frame is not None and not self.ws._sendlock.locked():
            try:
                sent = self.send_now(frame)
            except BlockingIOError:
                sent = 0
            except OSError:  # the peer is gone: the reader notices and ends the connection
                self.end()
                return False
            if sent == len(frame):
                return True
            frame = frame[sent:]  # the rest must go before anything else
        if self.ended:
            return False
        self.pending.append(frame)
        if self.ws is not None and self.drained is None:
            self._start_draining()
        return False

    def _start_draining(self) -> None:
        self.busy = True
        self.drained = self.eio.create_event()
        self.eio.start_background_task(self._drain)

    def attach(self, ws) -> None:
        """The WebSocket is open: write what was put before, then write through."""
        self.ws = ws
        self.send_now = ws.socket.fd.send
        if self.pending:
            self._start_draining()
        else:
            self.busy = False

    def _drain(self) -> None:
        """Write the waiting frames in order, waiting for room; close at a None."""
        ws = self.ws
        try:
            while self.pending:
                frame = self.pending[0]
                if frame is None:
                    self.pending.clear()
                    self.ended = True
                    ws.close()  # a close frame, then the reader ends the connection
                    return
                with ws._sendlock:  # eventlet's own writes (pongs) must not cut in
                    ws.socket.sendall(frame)  # green: waits, up to the socket's timeout
                del self.pending[0]  # a short list: a deque would cost 600 bytes per client
        except OSError:  # gone, or stuck past the timeout
            self.end()
        finally:
            self.drained.set()
            self.drained = None
            self.busy = self.ended  # unless it ended, frames go straight out again

    def end(self) -> None:
        """Drop what waits and cut the connection; its reader then ends it for engine.io."""
        self.ended = self.busy = True
        self.pending.clear()
        if self.ws is not None:
            try:
                self.ws.socket.fd.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve_websocket(eio_socket, ws) -> list:
    """engine.io's Socket._websocket_handler for a connection that opens on WebSocket,
    with the queue writing through instead of a writer task."""
    server = eio_socket.server
    ws.socket.settimeout(server.ping_interval + server.ping_timeout)
    eio_socket.connected = True
    eio_socket.upgraded = True
    eio_socket.queue.attach(ws)
    while True:
        try:
            data = ws.wait()
            if data is not None and len(data) > server.max_http_buffer_size:
                raise ValueError("packet is too large")
        except Exception as exc:
            if not eio_socket.closed:
                server.logger.info('%s: Unexpected error "%s", closing connection',
                                   eio_socket.sid, exc)
            break
        if data is None:  # closed by the client
            break
        try:
            eio_socket.receive(eio_packet.Packet(encoded_packet=data))
        except exceptions.UnknownPacketError:
            pass
        except exceptions.SocketIsClosedError:
            break
        except Exception:
            server.logger.exception("Unknown receive error")
            break
    eio_socket.queue.put(None)
    eio_socket.queue.join()
    eio_socket.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)
    return []
