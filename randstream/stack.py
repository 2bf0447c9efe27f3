"""The WSGI stack the server runs, built in one place (build), outermost first.

Each layer is a small WSGI middleware with one job; none installs another. Flask-SocketIO's
middleware, innermost, sends Engine.IO's requests to engine.io and the rest to Flask (whose
routes turn their own errors into JSON: web.api_error).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from urllib.parse import parse_qs

from werkzeug.wsgi import ClosingIterator

from . import sse
from .access import Guard
from .admission import Admission
from .headers import SECURITY_HEADERS
from .limits import query_problem, upgrade_problem
from .refusals import RETRY_AFTER
from .transport.hooks import EngineHooks
from .waiting import ANSWERS_PER_ADDRESS, PLAIN_ANSWERS

log = logging.getLogger(__name__)


def build(socketio_app, admission: Admission, hooks: EngineHooks, start_on_first_request=None,
          host_logs_failures: bool = True, hand_over=None, access=None):
    """The server's WSGI app around `socketio_app`, the middleware SocketIO(app) made.

    `hooks` checks polling bodies (check_post); `start_on_first_request` is the stream of
    a WSGI host's app, whose ticker starts with the first request (main() starts its own),
    and whose `slots` the host's limits count; `host_logs_failures`: whether the server
    logs what the boundary must pass on to it; `hand_over`: the transport's layer that lets
    a host's worker hand a WebSocket over to the direct path (transport/gunicorn.py);
    `access`: a private dashboard's (access.py).
    """
    host_stream = start_on_first_request
    layers = [
        # Outside the boundary: its StopIteration is how gunicorn is told a connection is
        # no longer its own, not a failure.
        *([(hand_over, {})] if hand_over is not None else []),
        (ErrorBoundary, {"log_passed_on": not host_logs_failures}),
        (SecurityHeaders, {}),
        (Admit, {"admission": admission, "check_post": hooks.check_post,
                 "path": socketio_app.engineio_path}),
        # Every server: plain answers (pages, files, the API) in progress; sessions pass
        # through, to HostLimits under a host (the two count disjoint requests).
        (Answering, {"counters": admission.counters, "address": admission.address,
                     "sessions": (socketio_app.engineio_path, sse.PATH)}),
        *([(HostLimits, {"slots": host_stream.slots, "counters": admission.counters,
                         "path": socketio_app.engineio_path}),
           (StartOnFirstRequest, {"stream": host_stream})]
          if host_stream is not None else []),
        # A private dashboard: a credential on every way to the readings. Inside the
        # counting layers (its 401s are answers like any) and the first request's start.
        *([(Guard, {"access": access, "engineio_path": socketio_app.engineio_path})]
          if access is not None else []),
        # Outside Flask-SocketIO's middleware, which passes a copy of the environ on.
        (Unbuffered, {"path": sse.PATH}),
    ]
    app = socketio_app
    for layer, options in reversed(layers):
        app = layer(app, **options)
    return app


def json_error(start_response, status: str, message: str, headers=()) -> list[bytes]:
    """An answer `{"error": message}`, with Retry-After on a 503 or a 429."""
    body = json.dumps({"error": message}).encode()
    head = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if status.startswith(("503", "429")):
        head.append(("Retry-After", str(RETRY_AFTER)))
    start_response(status, head + list(headers))
    return [body]


class ErrorBoundary:
    """No traceback reaches a client, and every failure leaves a trace in the log.

    Before anything was sent the answer is a JSON 500 (with the security headers: this
    layer is outside theirs); after, or on a WebSocket upgrade (the socket is the
    WebSocket's by then), the exception goes on to the server, which closes the
    connection (none of ours writes a traceback to a client), and logs it itself unless
    `log_passed_on` (eventlet's server, as main() runs it, drops it: log_output=False).
    A client that hung up mid-answer is no failure of ours and is not logged; the first
    failure of each kind is logged with its traceback, repeats in one line at most once a
    minute.
    """

    GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
    KINDS = 256  # kinds of failure remembered; past them each is logged in full

    def __init__(self, app, log_passed_on: bool = True) -> None:
        self.app = app
        self.log_passed_on = log_passed_on
        self.seen: dict[tuple[str, str], float] = {}

    def __call__(self, environ, start_response):
        started = False

        def starting(status, headers, exc_info=None):
            nonlocal started
            started = True
            if exc_info:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        try:
            return self.app(environ, starting)
        except self.GONE:
            raise
        except Exception as exc:
            if started or environ.get("HTTP_UPGRADE", "").lower() == "websocket":
                if self.log_passed_on:
                    self._log(exc, environ)
                raise  # too late for an answer; the server closes the connection
            self._log(exc, environ)
            return json_error(start_response, "500 Internal Server Error",
                              "internal server error", SECURITY_HEADERS.items())

    def _log(self, exc: Exception, environ) -> None:
        where = f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"
        kind = (type(exc).__name__, where[:100])
        now, last = time.monotonic(), self.seen.get(kind)
        if last is None:
            if len(self.seen) < self.KINDS:
                self.seen[kind] = now
            log.error("request failed: %s", where, exc_info=exc)
        elif now - last >= 60:
            self.seen[kind] = now
            log.error("request failed again: %s (%s: %.200s)", where, kind[0], exc)


class SecurityHeaders:
    """The security headers (headers.py) on every response: Flask's, Engine.IO's and the
    refusals; a header a response sets itself is kept."""

    def __init__(self, app, headers: dict[str, str] = SECURITY_HEADERS) -> None:
        self.app = app
        self.headers = list(headers.items())

    def __call__(self, environ, start_response):
        def with_headers(status, headers, exc_info=None):
            present = {name.lower() for name, _ in headers}
            headers = list(headers) + [(n, v) for n, v in self.headers if n.lower() not in present]
            if exc_info:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        return self.app(environ, with_headers)


class Admit:
    """Requests refused before anything else runs, answered as JSON: a query that is no
    UTF-8, and for Engine.IO (under `path`) a WebSocket upgrade that is no RFC 6455 one,
    what admission refuses (origin, cap, address limits) and a polling POST body the
    hooks refuse (`check_post(environ, eio_sid)`)."""

    def __init__(self, app, admission: Admission, check_post, path: str) -> None:
        self.app = app
        self.admission = admission
        self.check_post = check_post
        self.path = path

    def __call__(self, environ, start_response):
        problem = query_problem(environ)
        if problem is not None:
            return json_error(start_response, "400 Bad Request", problem)
        if environ.get("PATH_INFO", "").startswith(self.path):
            query = parse_qs(environ.get("QUERY_STRING", ""))
            problem = upgrade_problem(environ)
            refusal = (("400 Bad Request", problem) if problem is not None
                       else self.admission.refusal(environ, new="sid" not in query)
                       or self.check_post(environ, query.get("sid", [None])[0]))
            if refusal is not None:
                return json_error(start_response, *refusal)
        return self.app(environ, start_response)


class Answering:
    """Plain HTTP answers in progress (the page, static files, the API): at most `limit` at
    once, and `per_address` of them for one client address, so clients that stop reading
    large answers cannot hold every slot of the server (/healthz and new sessions would
    wait), nor one address every answer (the page would be a 503 for everyone); past
    either a 503 with Retry-After.

    An answer counts from the call until the server closes its body. Sessions (Engine.IO
    and event streams, under the paths `sessions`) are counted by admission instead;
    /healthz and /metrics answer in a few hundred bytes that never wait for the client.
    """

    EXEMPT = ("/healthz", "/metrics")

    def __init__(self, app, counters, sessions: tuple[str, ...], address=None,
                 limit: int = PLAIN_ANSWERS, per_address: int = ANSWERS_PER_ADDRESS) -> None:
        self.app = app
        self.counters = counters
        self.sessions = sessions
        self.address = address  # environ -> the client's address (Admission.address)
        self.limit = limit
        self.per_address = per_address
        self.answering = 0
        self.by_address: dict[str, int] = {}
        # Threading mode: answers run in parallel. Reentrant: a body dropped unclosed is
        # counted out when collected (_Counted.__del__), whenever that happens.
        self._lock = threading.RLock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in self.EXEMPT or path.startswith(self.sessions):
            return self.app(environ, start_response)
        address = self.address(environ) if self.address is not None else None
        with self._lock:
            mine = self.by_address.get(address, 0)
            busy = ("busy" if self.answering >= self.limit
                    else "busy_per_address" if address is not None and mine >= self.per_address
                    else None)
            if busy is None:
                self.answering += 1
                if address is not None:
                    self.by_address[address] = mine + 1
        if busy is not None:
            self.counters.refuse(busy)
            if busy == "busy":
                self.counters.log_once(log, busy, "%d answers are in progress (clients not "
                                       "reading them): refusing more with 503", self.limit)
            else:
                self.counters.log_once(log, busy, "%d answers to one address are in progress "
                                       "(it does not read them): refusing it more with 503",
                                       self.per_address)
            return json_error(start_response, "503 Service Unavailable",
                              "the server is busy; retry later")
        done = functools.partial(self._done, address)
        try:
            result = self.app(environ, start_response)
        except BaseException:
            done()
            raise
        counted = _CountedSized if hasattr(result, "__len__") else _Counted
        return counted(result, done)

    def _done(self, address) -> None:
        with self._lock:
            self.answering -= 1
            if address is not None:
                left = self.by_address.pop(address) - 1
                if left:
                    self.by_address[address] = left


class _Counted:
    """An answer's body: `done` runs once, when the server closes it (or, for a caller
    that never closes it, such as werkzeug's test client, when it is dropped)."""

    __slots__ = ("result", "done")

    def __init__(self, result, done) -> None:
        self.result, self.done = result, done

    def __iter__(self):
        return iter(self.result)

    def close(self) -> None:
        done, self.done = self.done, None
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            if done is not None:
                done()

    def __del__(self) -> None:
        done, self.done = self.done, None
        if done is not None:
            done()


class _CountedSized(_Counted):
    """A body of known length (a list): the server may size the answer from it."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.result)


class HostLimits:
    """A WSGI host worker's limits (hosting.py): under several worker processes a polling
    handshake gets 400 (its next request may reach another process); long-lived requests
    (Engine.IO's under `path`, event streams) take at most the worker's slots less a
    reserve, a new one past that gets 503 (once gunicorn.conf.py has told the slots)."""

    def __init__(self, app, slots, counters, path: str) -> None:
        self.app, self.slots, self.counters, self.path = app, slots, counters, path

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        engineio = path.startswith(self.path)
        if not (engineio or path == sse.PATH):
            return self.app(environ, start_response)
        query = parse_qs(environ.get("QUERY_STRING", ""))
        new = "sid" not in query
        # WSGI's own word for "another process serves this app too" (gunicorn: -w 2 or more)
        if new and engineio and environ.get("wsgi.multiprocess") and \
                query.get("transport", ["polling"])[0] == "polling":
            self.counters.refuse("polling_across_workers")
            self.counters.log_once(log, "polling_across_workers", "refused a polling handshake: "
                                   "several worker processes do not share Engine.IO sessions")
            return json_error(start_response, "400 Bad Request", (
                "this server runs several worker processes, which do not share Engine.IO "
                "sessions: connect over WebSocket (transports: ['websocket'])"))
        host = self.slots.host
        if host is None:
            return self.app(environ, start_response)
        if not self.slots.take(new):
            self.counters.refuse("host_capacity")
            self.counters.log_once(log, "host_capacity", "at the %s's capacity (%d %s, %d for "
                                   "long-lived requests): refusing new ones with 503", host.name,
                                   host.slots, host.unit, host.long_lived)
            return json_error(start_response, "503 Service Unavailable", (
                f"server is at its capacity ({host.long_lived} long-lived connections per "
                f"worker); retry later"))
        try:
            result = self.app(environ, start_response)
        except BaseException:  # a WebSocket's end under threads comes as an exception
            self.slots.give_back()
            raise
        return ClosingIterator(result, self.slots.give_back)


class StartOnFirstRequest:
    """The ticker starts with the first request this process serves (a WSGI host's app).

    Under `flask run --debug` the reloader's parent builds the app too but never serves,
    so only the serving process ticks; start() itself runs at most once.
    """

    def __init__(self, app, stream) -> None:
        self.app, self.stream = app, stream

    def __call__(self, environ, start_response):
        if self.stream.started_at is None:
            self.stream.start()
        return self.app(environ, start_response)


class Unbuffered:
    """eventlet.wsgi holds back chunks below 4 KiB unless told otherwise: each event of the
    stream at `path` must go at once. Set on the server's own environ."""

    def __init__(self, app, path: str) -> None:
        self.app = app
        self.path = path

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == self.path:
            environ["eventlet.minimum_write_chunk_size"] = 0
        return self.app(environ, start_response)
