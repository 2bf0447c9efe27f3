"""The eventlet runtime of the direct WebSocket path (randstream/transport/websocket.py).

Reads are a callback of eventlet's hub on the socket (hub.add, its documented API); sends
go to the raw non-blocking socket under eventlet's green one; the HTTP connection task
ends after the handshake when the server allows it (http_protocol below offers a Detach).

Extension points used (EXTENSION_POINTS below, checked at start; tests/test_transport.py
and test_direct.py fail if an upgrade moves them): engine.io's `connect` handler runs after
the socket is made and before its first write, and `adopt` replaces the socket's `queue`
(used through put, qsize and join) and its `_websocket_handler` there; eventlet's WebSocket
keeps its socket in `.socket`, with the raw one in `.socket.fd`, and sends no close frame
once `websocket_closed` is set; the HTTP protocol (http_protocol) lets a connection's task
end without closing it through `conn_state`. Polling clients, upgrades from polling and the
other async modes keep engine.io's way.

This is the eventlet runtime's module of randstream.transport: EXTENSION_POINTS, adopt,
opens_on_websocket, Connection, http_protocol, parser_problems and body_problems are what
a runtime module provides.
"""

from __future__ import annotations

import io
import socket

from . import websocket
from .points import ExtensionPoint, code_names
from .protocol import websocket_frame
from .websocket import DETACH, Detach, _noop, opens_on_websocket

__all__ = ["DETACH", "EXTENSION_POINTS", "Connection", "Detach", "adopt", "body_problems",
           "http_protocol", "opens_on_websocket", "parser_problems", "websocket_frame"]


def adopt(eio_socket) -> None:
    """Serve a new engine.io socket that opens on WebSocket with a Connection."""
    websocket.adopt(eio_socket, Connection)


class Connection(websocket.Connection):
    """A WebSocket client read by eventlet's hub and written through its raw socket."""

    __slots__ = ()

    def raw_socket(self, green_socket):
        return green_socket.fd

    def _watch(self) -> None:
        from eventlet import hubs

        hub = hubs.get_hub()
        self.listener = hub.add(hub.READ, self.sock.fileno(), self._readable, self._gone, _noop)
        # The listener notes the task that made it, for the hub to wake on trouble; that
        # task (the HTTP connection's) ends now, so the hub itself stands in for it.
        self.listener.greenlet = hub.greenlet

    def _unwatch(self) -> None:
        from eventlet import hubs

        hubs.get_hub().remove(self.listener)

    def _later(self, seconds: float, function):
        from eventlet import hubs

        return hubs.get_hub().schedule_call_global(seconds, function)

    def take_over(self, ws) -> bool:
        ws.websocket_closed = True  # the Connection sends the close frames, not eventlet
        detach = ws.environ.get(DETACH)
        if detach is None:
            return False
        detach.requested = True
        # python-socketio keeps this environ for the connection's life: drop what would
        # keep the finished HTTP request (its protocol object, buffers, headers) alive.
        for key in ("eventlet.set_idle", "eventlet.input"):
            ws.environ.pop(key, None)
        ws.environ["wsgi.input"] = io.BytesIO()  # the request body was read long ago
        ws.environ["eventlet.posthooks"] = []  # eventlet reads it once the request ends
        return True


# The HTTP side: a connection's task may end while its WebSocket lives on ---------------------

def http_protocol(waiting, request_timeout: float, *, detach: bool):
    """eventlet's HTTP protocol with a request deadline, our refusals, small buffers and,
    on the fast path (`detach`), a WebSocket that outlives its HTTP task.

    From the moment a connection waits for a request (new, or idle after one) its request
    line and headers must be in within `request_timeout`, and then its body within
    limits.body_deadline (read whole before the application runs, limits.body_to_read); the
    application (a long poll, a WebSocket) runs without a deadline. `waiting`
    (waiting.Waiting) counts the connections waiting so, until their body is in. Refusals
    of eventlet's parser (414, 400, 431, 505) go out as ours: JSON, security headers, no
    Python version; where eventlet's parser internals moved (PARSER_POINTS), its own bare
    refusals stay; where its request internals moved (BODY_POINTS), the application reads
    the body as eventlet gives it, without a deadline.

    A WebSocket keeps its HTTP connection's buffered reader (8 KiB) and writer (16 KiB)
    for life, though it reads and writes the socket directly after the upgrade: more than
    the rest of an idle client's memory. Request headers take a read or two more; response
    headers fit in 1 KiB; larger reads and writes bypass these buffers anyway.
    """
    import eventlet
    import eventlet.wsgi

    from ..limits import BODY_GRACE, BODY_LIMIT, BODY_RATE, body_deadline, body_to_read
    from ..refusals import CutShort, HeaderLines, bad_framing, refusal_bytes

    parser_ok = not parser_problems()
    body_ok = not body_problems()
    too_large = ((eventlet.wsgi.HeaderLineTooLong, eventlet.wsgi.HeadersTooLarge)
                 if parser_ok else ())

    class LeanHttpProtocol(eventlet.wsgi.HttpProtocol):
        rbufsize = 512
        wbufsize = 1024
        detach = None  # the request's offer to let its WebSocket outlive this task
        deadline = None  # eventlet.Timeout until the request's headers are in
        environ = None

        def handle_one_request(self):
            if self.deadline is not None:  # keep-alive: waiting again, for the next request
                waiting.add(self.connection, self.client_address)
            self.deadline = eventlet.Timeout(request_timeout, TimeoutError("request timeout"))
            try:
                super().handle_one_request()
            finally:
                self.deadline.cancel()

        if parser_ok:
            def _read_request_line(self):
                line = super()._read_request_line()
                if len(line) >= self.server.url_length_limit:  # eventlet: a bare 414
                    self.send_error(414, "request line too long")
                    return ""
                return line

        def parse_request(self):
            lines = self.rfile = HeaderLines(self.rfile)
            try:
                if not super().parse_request():
                    return False
            except too_large:
                self.send_error(431, "request headers too large")
                return False
            except CutShort:  # the headers ended with the connection: nobody reads an answer
                self.close_connection = 1
                return False
            finally:
                self.rfile = lines.stream
            problem = bad_framing(self.headers)
            if problem is not None:
                self.send_error(400, problem)
                return False
            return True

        def send_error(self, code, message=None, explain=None):
            self.close_connection = True
            # No longer waiting for a request: a client that does not read would block this
            # write with its next bytes unread, and an unread head of `waiting` pauses
            # accepting (server.Waiting.has_room) for everyone until the deadline.
            waiting.discard(self.connection)
            try:
                self.wfile.write(refusal_bytes(int(code), message or "bad request"))
                self.wfile.flush()
            except OSError:
                pass

        def get_environ(self):
            self.deadline.cancel()  # the headers are in: the body has its own deadline
            environ = super().get_environ()
            if detach:
                environ[DETACH] = self.detach = Detach()
            return environ

        def handle_one_response(self):
            if body_ok and not self.read_body():
                self.close_connection = 1
                return
            waiting.discard(self.connection)  # the request is in: the application takes its time
            super().handle_one_response()

        def read_body(self) -> bool:
            """The body, read whole into wsgi.input within its deadline; False if it came too
            slowly (a 408), too large (a chunked one: 413), broken or not at all."""
            environ = self.environ
            want = body_to_read(environ)
            if want is None:  # too large to read: the application answers from its length
                self.close_connection = 1  # and nothing is read after the answer either
                environ["wsgi.input"] = io.BytesIO()
                return True
            if not want:
                return True
            timer = eventlet.Timeout(body_deadline(want), TimeoutError)
            try:
                body = environ["eventlet.input"].read(want)
            except TimeoutError:
                waiting.report("slow_body", "closed a connection whose request body came slower "
                               "than %d bytes a second after %g s", BODY_RATE, BODY_GRACE)
                self.send_error(408, "the request body came too slowly")
                return False
            except ValueError:  # eventlet's ChunkReadError: no chunked encoding
                self.send_error(400, "the chunked request body is malformed")
                return False
            except OSError:
                return False
            finally:
                timer.cancel()
            if len(body) > BODY_LIMIT:
                self.send_error(413, f"a request body may have at most {BODY_LIMIT} bytes")
                return False
            if len(body) < want and environ.get("CONTENT_LENGTH"):
                return False  # the client went away mid-body
            environ["wsgi.input"] = io.BytesIO(body)
            return True

        def setup(self):
            super().setup()
            # Headers and body go out as separate writes; without this the body can wait
            # for the client's delayed ACK of the headers (Nagle), up to 40 ms.
            try:
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

        def finish(self):
            waiting.discard(self.connection)
            self.deadline = None  # its exception's traceback refers back to this object
            if self.environ is not None:  # as does eventlet's set_idle in the environ
                self.environ.pop("eventlet.set_idle", None)
            if self.detach is not None and self.detach.requested:
                # A WebSocket lives on without this task (websocket.serve_websocket): release the
                # HTTP side only, and hand eventlet's clean-up nothing to shut down.
                self.conn_state[1] = _Detached()
                self.rfile.close()
                self.wfile.close()
                self.environ = None
                return
            try:
                super().finish()
            finally:
                # A write that fails here (the client gone, or its socket shut to make room)
                # ends eventlet's clean-up before the reader is closed: the reader then holds
                # the descriptor open until a full collection (server.FullCollections, once a
                # minute). Closed here, it is released at once.
                for stream in (self.wfile, self.rfile):
                    try:
                        stream.close()
                    except OSError:
                        pass
                self.connection.close()

    class _Detached:
        def shutdown(self, how=None):
            pass

        def close(self):
            pass

    return LeanHttpProtocol


def _check_parser() -> str | None:
    import eventlet.wsgi

    protocol = eventlet.wsgi.HttpProtocol
    if not callable(getattr(protocol, "_read_request_line", None)):
        return "HttpProtocol._read_request_line is gone"
    if "url_length_limit" not in code_names(protocol._read_request_line) and \
            "url_length_limit" not in code_names(protocol.handle_one_request):
        return "HttpProtocol no longer reads server.url_length_limit"
    for name in ("HeaderLineTooLong", "HeadersTooLarge"):
        if not isinstance(getattr(eventlet.wsgi, name, None), type):
            return f"eventlet.wsgi.{name} is gone"
    return None


def _check_body() -> str | None:
    import eventlet.wsgi

    protocol = eventlet.wsgi.HttpProtocol
    if not {"get_environ", "handle_one_response"} <= code_names(protocol.handle_one_request):
        return "HttpProtocol.handle_one_request no longer calls get_environ, handle_one_response"
    if "eventlet.input" not in code_names(protocol.get_environ):
        return "HttpProtocol.get_environ no longer sets eventlet.input"
    if "close_connection" not in code_names(protocol.handle_one_response):
        return "HttpProtocol.handle_one_response no longer reads close_connection"
    return None


def parser_problems() -> list[str]:
    """What is wrong with the parser internals our refusals use (checked once, at start)."""
    return [f"{p.name} ({problem})" for p in PARSER_POINTS if (problem := p.problem()) is not None]


def body_problems() -> list[str]:
    """What is wrong with the request internals the body deadline uses (checked at start)."""
    return [f"{p.name} ({problem})" for p in BODY_POINTS if (problem := p.problem()) is not None]


# Checked at start (randstream.transport): each returns None, or what is wrong --------------------

def _check_websocket_closed() -> str | None:
    from eventlet import websocket

    if "websocket_closed" not in code_names(websocket.RFC6455WebSocket._send_closing_frame):
        return "RFC6455WebSocket._send_closing_frame no longer reads websocket_closed"
    return None


def _check_raw_socket() -> str | None:
    from eventlet import greenio

    probe = greenio.GreenSocket()
    try:
        raw = probe.fd
        if not callable(getattr(raw, "send", None)) or raw.gettimeout() != 0.0:
            return "GreenSocket.fd is not the raw non-blocking socket"
    finally:
        probe.close()
    return None


def _check_listener_task() -> str | None:
    from eventlet import hubs

    hub = hubs.get_hub()
    a, b = socket.socketpair()
    try:
        listener = hub.add(hub.READ, a.fileno(), _noop, _noop, _noop)
        try:
            if not hasattr(listener, "greenlet"):
                return "the hub's FdListener has no greenlet"
        finally:
            hub.remove(listener)
    finally:
        a.close()
        b.close()
    return None


def _check_http_protocol() -> str | None:
    import eventlet.wsgi

    protocol = eventlet.wsgi.HttpProtocol
    if "conn_state" not in code_names(protocol.__init__):
        return "HttpProtocol no longer keeps conn_state"
    missing = {"eventlet.set_idle", "eventlet.input", "eventlet.posthooks"} - code_names(
        protocol.get_environ)
    if missing:
        return "HttpProtocol.get_environ no longer sets " + ", ".join(sorted(missing))
    if "eventlet.posthooks" not in code_names(protocol.handle_one_response):
        return "HttpProtocol.handle_one_response no longer runs eventlet.posthooks"
    return None


EXTENSION_POINTS = [
    ExtensionPoint("eventlet WebSocket.websocket_closed",
                   "the direct path sends its own close frames, not eventlet",
                   _check_websocket_closed),
    ExtensionPoint("eventlet GreenSocket.fd",
                   "one non-blocking send per client, no task switch", _check_raw_socket),
    ExtensionPoint("eventlet FdListener.greenlet",
                   "the hub reads WebSockets after their HTTP task ended", _check_listener_task),
    ExtensionPoint("eventlet HttpProtocol.conn_state and environ eventlet.*",
                   "a WebSocket's HTTP task ends; its buffers and request are let go",
                   _check_http_protocol),
]

# Not the fast path: our own 414/431 answers (JSON, security headers). If these moved,
# eventlet's own bare refusals answer instead; nothing else changes.
PARSER_POINTS = [
    ExtensionPoint("eventlet HttpProtocol._read_request_line, HeaderLineTooLong, HeadersTooLarge",
                   "parser refusals carry security headers and no Python version", _check_parser),
]

# Not the fast path: request bodies read whole within a deadline before the application
# runs. If these moved, the application reads bodies as eventlet gives them (no deadline).
BODY_POINTS = [
    ExtensionPoint("eventlet HttpProtocol.handle_one_response, environ eventlet.input",
                   "a request body that comes too slowly is cut off", _check_body),
]
