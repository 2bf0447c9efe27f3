"""The gevent runtime of the direct WebSocket path (randstream/transport/websocket.py).

Under gevent engine.io's WebSocket driver is simple-websocket: per client a dup() of the
socket (two descriptors), a wsproto state machine, a reader thread (a greenlet with its
stack) and engine.io's writer task, besides the HTTP connection's greenlet waiting for the
end: about 60 KB and 90 us of CPU per client-message. Here, for clients that open on
WebSocket under this server's pywsgi handler (http_protocol below):
- the handshake is answered by websocket_driver below, on the connection's own socket;
- reads are an io watcher of gevent's loop (`get_hub().loop.io(fd, 1)`, `.start(callback)`,
  its documented loop interface), writes go to the raw non-blocking socket under gevent's;
- the HTTP connection's greenlet ends after the handshake: the handler leaves its socket
  to the Connection (its `socket` set to None, which gevent's clean-up then skips).
Other WSGI servers under gevent (gunicorn's worker, a plain pywsgi server) offer no Detach:
their clients keep engine.io's own way, as do polling clients and upgrades from polling.

On either path an upgrade served by engine.io's own driver (simple-websocket writes the 101
and the frames on a dup() of the socket) is marked (upgrade_marker): engine.io then answers
the request as if it were a poll (an empty 200), which pywsgi would write after the close
frame, into the WebSocket; http_protocol's handler drops it and ends the connection.

Extension points used (EXTENSION_POINTS below, checked at start): gevent's socket keeps the
raw non-blocking socket in `._sock`; pywsgi's WSGIHandler closes its connection in
handle() only while `self.socket` is set, and handle_one_request() reads the next request
unless told to stop. The engine.io points are websocket.py's and engineio_checks.py's.
Not the fast path (HTTP_POINTS): pywsgi writes an application's answer through the
handler's write(); if that moved, its own way stays (the 200 after the close frame).
(BODY_POINTS): the handler reads a request's body through pywsgi's Input before the
application runs; if that moved, the application reads it as pywsgi gives it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import socket

from . import websocket
from .points import ExtensionPoint, code_names
from .protocol import websocket_frame
from .websocket import DETACH, Detach
from .websocket import opens_on_websocket as _asks_websocket

__all__ = ["DETACH", "EXTENSION_POINTS", "HTTP_POINTS", "Connection", "Detach", "adopt",
           "body_problems", "http_protocol", "opens_on_websocket", "parser_problems",
           "upgrade_marker", "websocket_driver", "websocket_frame"]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's handshake constant
UPGRADE = "random_stream.upgrade"  # environ: an Upgrade, from http_protocol's handler


class Upgrade:
    """Whether engine.io's own WebSocket driver has this request's connection (an object,
    not an environ flag: Flask-SocketIO passes a copy of environ on)."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


def opens_on_websocket(environ) -> bool:
    """Whether this handshake asks for WebSocket, on a server whose handler can let go of
    the connection (only ours: http_protocol); elsewhere engine.io's own driver serves."""
    return DETACH in environ and _asks_websocket(environ)


def adopt(eio_socket) -> None:
    """Serve a new engine.io socket that opens on WebSocket with a Connection."""
    websocket.adopt(eio_socket, Connection)


class _Timer:
    """A gevent loop timer with eventlet's cancel()."""

    __slots__ = ("watcher",)

    def __init__(self, loop, seconds: float, function) -> None:
        self.watcher = loop.timer(seconds)
        self.watcher.start(function)

    def cancel(self) -> None:
        self.watcher.close()


class Connection(websocket.Connection):
    """A WebSocket client read by an io watcher of gevent's loop, written through its raw socket."""

    __slots__ = ()

    def raw_socket(self, green_socket):
        return green_socket._sock

    def _watch(self) -> None:
        import gevent

        self.listener = gevent.get_hub().loop.io(self.sock.fileno(), 1)  # 1: readable
        self.listener.start(self._readable)

    def _unwatch(self) -> None:
        self.listener.close()  # stops it too

    def _later(self, seconds: float, function):
        import gevent

        return _Timer(gevent.get_hub().loop, seconds, function)

    def take_over(self, ws) -> bool:
        detach = ws.environ.get(DETACH)
        detach.requested = True  # websocket_driver serves only connections with a Detach
        detach.socket = None
        ws.environ["wsgi.input"] = io.BytesIO()  # gevent's reader of the request: let it go
        return True


class _Handshaken:
    """What engine.io and the frame screen use of a WebSocket once the handshake is done."""

    def __init__(self, environ, sock) -> None:
        self.environ = environ
        self.socket = sock

    def wait(self):  # the screen wraps it; the direct path reads without it
        return None


def websocket_driver(driver):
    """engine.io's WebSocket driver class; a socket adopted above gets our handshake instead.

    Innermost of the wrappers (randstream.transport.install): the compression refusal and the
    frame screen subclass it, and they hand it their own handler, with the engine.io
    socket as its __self__.
    """

    class DirectWebSocket(driver):
        def __init__(self, handler, server):
            eio_socket = getattr(handler, "__self__", None)
            self.direct = getattr(eio_socket, "queue", None).__class__ is Connection
            if self.direct:
                self.handler, self.eio_socket = handler, eio_socket
            else:
                super().__init__(handler, server)

        def __call__(self, environ, start_response):
            if not self.direct:
                return super().__call__(environ, start_response)
            detach = environ.get(DETACH)
            accept = _accept_key(environ)
            sock = getattr(detach, "socket", None)
            if accept is None or sock is None:
                connection = self.eio_socket.queue
                connection.finish(self.eio_socket.server.reason.TRANSPORT_ERROR)
                self.eio_socket = self.handler = None
                start_response("400 Bad Request", [("Content-Type", "text/plain"),
                                                   ("Connection", "close")])
                return [b"not a valid WebSocket handshake\n"]
            from gevent import socket as gsocket

            # gevent's server closes the connection's socket object when its greenlet
            # ends: the Connection gets a socket object of its own on the same descriptor.
            sock = gsocket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
            handler, self.handler, eio_socket, self.eio_socket = self.handler, None, self.eio_socket, None
            try:
                sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            except OSError:  # gone during the handshake
                sock.close()
                eio_socket.queue.finish(eio_socket.server.reason.TRANSPORT_CLOSE)
                return []
            return handler(_Handshaken(environ, sock))

    return DirectWebSocket


def upgrade_marker(driver):
    """engine.io's WebSocket driver class, marking the request's Upgrade once the WebSocket
    is open (the driver calls engine.io's handler only then): from that moment nothing of
    HTTP may go out on the connection. Innermost of the wrappers, on either path."""

    class MarkedWebSocket(driver):
        def __init__(self, handler, server):
            self.upgrade = slot = [None]  # the request's Upgrade, once __call__ has it

            def marked(ws):
                if slot[0] is not None:
                    slot[0].done = True
                return handler(ws)

            if hasattr(handler, "__self__"):  # the engine.io socket, for the wrappers outside
                marked.__self__ = handler.__self__
            super().__init__(marked, server)

        def __call__(self, environ, start_response):
            self.upgrade[0] = environ.get(UPGRADE)
            try:
                return super().__call__(environ, start_response)
            finally:
                self.upgrade[0] = None

    return MarkedWebSocket


def _accept_key(environ) -> bytes | None:
    """RFC 6455's Sec-WebSocket-Accept for this request, or None if it is no valid handshake."""
    if environ.get("REQUEST_METHOD") != "GET" or \
            environ.get("HTTP_UPGRADE", "").lower() != "websocket" or \
            environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        return None
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except ValueError:
        return None
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest())


# The HTTP side: a connection's greenlet may end while its WebSocket lives on ----------------

def http_protocol(waiting, request_timeout: float, *, detach: bool,
                  send_timeout: float | None = None):
    """gevent's WSGIHandler with a request deadline (the headers within `request_timeout`,
    then the body, read whole before the application runs, within limits.body_deadline),
    a send timeout for the answer (a reader that stops reading is let go) and, on the fast
    path (`detach`), a WebSocket that outlives its greenlet. `waiting` (waiting.Waiting)
    counts the connections waiting for their request, until its body is in."""
    import gevent
    from gevent.pywsgi import Input, WSGIHandler

    from ..limits import BODY_GRACE, BODY_LIMIT, BODY_RATE, body_deadline, body_to_read
    from ..refusals import CutShort, HeaderLines, refusal_bytes

    body_ok = not body_problems()

    class DeadlineHandler(WSGIHandler):
        deadline = None
        detach = None  # the request's offer to let its WebSocket outlive this greenlet
        upgrade = None  # the request's Upgrade (upgrade_marker): engine.io's driver has it
        cut_short = False  # the request's headers ended with the connection
        body_unread = False  # its body was too large to read: the connection ends after it

        def __init__(self, sock, address, server, rfile=None):
            super().__init__(sock, address, server, rfile)
            # Headers and frames go out as separate writes; without this a frame can wait
            # for the client's delayed ACK of the one before (Nagle), up to 40 ms.
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

        def handle_one_request(self):
            sock = self.socket
            waiting.add(sock, self.client_address)  # new, or idle in keep-alive
            self.deadline = gevent.Timeout.start_new(request_timeout, TimeoutError("request timeout"))
            try:
                result = super().handle_one_request()
            finally:
                self.deadline.close()
                self.deadline = None  # its exception's traceback refers back to this object
                waiting.discard(sock)
            offer, self.detach = self.detach, None
            if offer is not None:
                offer.socket = None
                if offer.requested:
                    # The Connection has the descriptor now (websocket_driver): handle() ends
                    # without touching the detached socket object; the reader goes with it.
                    self.rfile.close()
                    self.socket = None
                    self.environ = None
                    return None
            upgrade, self.upgrade = self.upgrade, None
            if upgrade is not None and upgrade.done:
                return None  # the connection was a WebSocket: it ends with it
            return result

        def write(self, data):
            if self.upgrade is not None and self.upgrade.done:
                # engine.io answers an upgrade as if it were a poll once the WebSocket ended;
                # the client has had its 101 and a close frame: not a byte of HTTP after them.
                self.close_connection = True
                return
            super().write(data)

        def read_request(self, raw_requestline):
            lines = self.rfile = HeaderLines(self.rfile)
            self.cut_short = False
            try:
                return super().read_request(raw_requestline)
            except TimeoutError:  # gevent would print a traceback for it: a 400, quietly
                return False
            except (CutShort, OSError):  # the headers ended with the connection (a reset too:
                # gevent would print it): nobody reads an answer, handle_one_response does nothing
                self.cut_short = True
                return True
            finally:
                self.rfile = lines.stream
                self.deadline.close()  # the headers are in: the body has its own deadline
                if send_timeout is not None and self.socket is not None:
                    self.socket.settimeout(send_timeout)

        def handle_one_response(self):
            if self.cut_short or (body_ok and not self.read_body()):
                self.close_connection = True
                return
            waiting.discard(self.socket)  # the request is in: the application takes its time
            super().handle_one_response()

        def read_body(self) -> bool:
            """The body, read whole into wsgi.input within its deadline; False if it came too
            slowly (a 408), too large (a chunked one: 413), broken or not at all."""
            environ = self.environ
            want = body_to_read(environ)
            if want is None:  # too large to read: the application answers from its length
                self.close_connection = self.body_unread = True
                self.wsgi_input = Input(self.rfile, 0)  # so gevent discards nothing after it
                environ["wsgi.input"] = io.BytesIO()
                return True
            if not want:
                return True
            timer = gevent.Timeout.start_new(body_deadline(want), TimeoutError)
            try:
                body = self.wsgi_input.read(want)
            except TimeoutError:
                waiting.report("slow_body", "closed a connection whose request body came slower "
                               "than %d bytes a second after %g s", BODY_RATE, BODY_GRACE)
                return self.refuse(408, "the request body came too slowly")
            except ValueError:  # gevent's _InvalidClientInput: no chunked encoding
                return self.refuse(400, "the chunked request body is malformed")
            except OSError:
                return False
            finally:
                timer.close()
            if len(body) > BODY_LIMIT:
                return self.refuse(413, f"a request body may have at most {BODY_LIMIT} bytes")
            if len(body) < want and environ.get("CONTENT_LENGTH"):
                return False  # the client went away mid-body
            environ["wsgi.input"] = io.BytesIO(body)
            return True

        def start_response(self, status, headers, exc_info=None):
            if self.body_unread and all(name.lower() != "connection" for name, _ in headers):
                headers = [*headers, ("Connection", "close")]  # gevent says so to HTTP/1.0 only
            return super().start_response(status, headers, exc_info)

        def refuse(self, code: int, message: str) -> bool:
            waiting.discard(self.socket)
            try:
                self.socket.sendall(refusal_bytes(code, message))
            except OSError:
                pass
            return False

        def handle_error(self, t, v, tb):
            if isinstance(v, TimeoutError):  # a reader that stopped reading: let it go, quietly
                self.close_connection = True
                return
            super().handle_error(t, v, tb)

        def get_environ(self):
            environ = super().get_environ()
            environ[UPGRADE] = self.upgrade = Upgrade()
            if detach:
                environ[DETACH] = self.detach = Detach(self.socket)
            return environ

    return DeadlineHandler


def parser_problems() -> list[str]:
    """What moved of the handler's internals outside the fast path (HTTP_POINTS); our
    parser refusals are eventlet's only, under gevent its own answer."""
    return [f"{p.name} ({problem})" for p in HTTP_POINTS if (problem := p.problem()) is not None]


def body_problems() -> list[str]:
    """What is wrong with the request internals the body deadline uses (checked at start)."""
    return [f"{p.name} ({problem})" for p in BODY_POINTS if (problem := p.problem()) is not None]


# Checked at start (randstream.transport): each returns None, or what is wrong --------------------

def _check_raw_socket() -> str | None:
    import _socket

    from gevent import socket as gsocket

    probe = gsocket.socket()
    try:
        raw = getattr(probe, "_sock", None)
        if not isinstance(raw, _socket.socket) or raw.gettimeout() != 0.0 \
                or raw.fileno() != probe.fileno():
            return "gevent's socket._sock is not the raw non-blocking socket"
    finally:
        probe.close()
    return None


def _check_loop() -> str | None:
    import gevent

    loop = gevent.get_hub().loop
    a, b = socket.socketpair()
    try:
        watcher = loop.io(a.fileno(), 1)
        try:
            if not all(callable(getattr(watcher, m, None)) for m in ("start", "close")):
                return "the loop's io watcher has no start/close"
        finally:
            watcher.close()
        timer = loop.timer(1.0)
        if not all(callable(getattr(timer, m, None)) for m in ("start", "close")):
            return "the loop's timer has no start/close"
        timer.close()
    finally:
        a.close()
        b.close()
    return None


def _check_handler() -> str | None:
    from gevent.pywsgi import WSGIHandler

    if "socket" not in code_names(WSGIHandler.handle) or \
            "handle_one_request" not in code_names(WSGIHandler.handle):
        return "WSGIHandler.handle no longer loops on handle_one_request while it has a socket"
    if "get_environ" not in code_names(WSGIHandler.handle_one_request):
        return "WSGIHandler.handle_one_request no longer builds the environ with get_environ"
    return None


def _check_write() -> str | None:
    from gevent.pywsgi import WSGIHandler

    for method in ("process_result", "_send_error_response_if_possible"):
        if "write" not in code_names(getattr(WSGIHandler, method, None)):
            return f"WSGIHandler.{method} no longer writes through write()"
    return None


def _check_body() -> str | None:
    from gevent.pywsgi import Input, WSGIHandler

    if not {"get_environ", "handle_one_response"} <= code_names(WSGIHandler.handle_one_request):
        return "WSGIHandler.handle_one_request no longer calls get_environ, handle_one_response"
    if "wsgi_input" not in code_names(WSGIHandler.get_environ):
        return "WSGIHandler.get_environ no longer sets wsgi_input"
    if "wsgi_input" not in code_names(WSGIHandler.handle_one_response):
        return "WSGIHandler.handle_one_response no longer discards the rest through wsgi_input"
    if not callable(getattr(Input, "read", None)):
        return "pywsgi.Input has no read"
    return None


# Not the fast path: request bodies read whole within a deadline before the application
# runs. If these moved, the application reads bodies as gevent gives them (no deadline).
BODY_POINTS = [
    ExtensionPoint("gevent WSGIHandler.handle_one_response and wsgi_input",
                   "a request body that comes too slowly is cut off", _check_body),
]

EXTENSION_POINTS = [
    ExtensionPoint("gevent socket._sock", "one non-blocking send per client, no task switch",
                   _check_raw_socket),
    ExtensionPoint("gevent loop.io and loop.timer",
                   "the loop reads WebSockets after their HTTP greenlet ended", _check_loop),
    ExtensionPoint("gevent WSGIHandler.handle and its socket",
                   "a WebSocket's HTTP greenlet ends; its reader is let go", _check_handler),
]

# Not the fast path: an upgraded WebSocket's end is not followed by engine.io's HTTP answer.
# If this moved, pywsgi's own way stays (the answer after the close frame); nothing else changes.
HTTP_POINTS = [
    ExtensionPoint("gevent WSGIHandler.write",
                   "nothing of HTTP follows an upgraded WebSocket's close frame", _check_write),
]
