"""gunicorn's gevent worker (`gunicorn -k gevent`): its WebSockets on the direct path.

gunicorn's GeventWorker reads each connection with its own HTTP parser, in a greenlet of
its pool (AsyncWorker.handle), and gives the app the connection's socket as
environ["gunicorn.socket"]. engine.io's own driver (simple-websocket) serves a WebSocket
on a dup() of it and keeps that greenlet, its parser and its request until the end (a
reader and a writer task besides, about 60 KB and 60-80 us of CPU per client-message),
then raises StopIteration: gunicorn takes that to mean the connection is done, and its
handle() closes it without writing anything.

Here HandOver, a WSGI layer (outermost in stack.py), offers a handshake that opens on
WebSocket a Detach on that socket, as random_stream.py's own pywsgi handler does
(gevent.py): the direct path's driver takes the descriptor (gunicorn's socket object is
left detached, so its close() is a no-op) and answers the handshake itself; HandOver then
raises StopIteration as engine.io's driver would, and the greenlet, its parser and its
slot in the worker's pool go. The client costs what it costs under random_stream.py.

Extension points (EXTENSION_POINTS, checked at start when gunicorn's gevent worker is the
host; if one fails, one WARNING and its WebSocket clients take engine.io's own driver):
- environ["gunicorn.socket"] is the connection's socket (gunicorn.http.wsgi.default_environ);
- AsyncWorker.handle_request lets a StopIteration of the app through before answering,
  and AsyncWorker.handle ends the connection on it.
"""

from __future__ import annotations

import logging
import sys
from urllib.parse import parse_qs

from .points import ExtensionPoint, code_names
from .websocket import DETACH, Detach
from .websocket import opens_on_websocket as asks_websocket

log = logging.getLogger(__name__)

SOCKET = "gunicorn.socket"  # environ: the connection's socket, under gunicorn's own HTTP handling
EARLY_HINTS = "wsgi.early_hints"  # environ: gunicorn's callback, a closure over the request
WORKER_MODULE = "gunicorn.workers.ggevent"


def gevent_worker_loaded() -> bool:
    """Whether this process is (or was forked from) gunicorn with its gevent worker."""
    return WORKER_MODULE in sys.modules


class HandOver:
    """Offers a new WebSocket's connection to the direct path; ends gunicorn's handling of
    it once taken (see the module's docstring)."""

    def __init__(self, app) -> None:
        self.app = app
        self.warned = False

    def __call__(self, environ, start_response):
        if not asks_websocket(environ) or "sid" in parse_qs(environ.get("QUERY_STRING", "")):
            return self.app(environ, start_response)
        sock = environ.pop(SOCKET, None)
        if sock is None:
            self._not_ours(environ)
            return self.app(environ, start_response)
        # python-socketio keeps a copy of the handshake's environ for the client's life:
        # without these, not the request and its closures (gunicorn's early hints) with it,
        # nor a class made for each request around the socket (engine.io's middleware).
        environ.pop(EARLY_HINTS, None)
        detach = environ[DETACH] = Detach(sock)
        result = self.app(environ, start_response)
        if not detach.requested:  # refused, or served by engine.io's own driver
            detach.socket = None
            return result
        if hasattr(result, "close"):
            result.close()  # the layers inside count the request done (stack.py's HostLimits)
        raise StopIteration  # gunicorn: no answer, no next request, the greenlet ends

    def _not_ours(self, environ) -> None:
        if not self.warned:
            self.warned = True
            log.warning("WebSocket clients take engine.io's own driver: this server (%s) "
                        "does not hand connections over (gunicorn -k gevent does)",
                        environ.get("SERVER_SOFTWARE", "unknown")[:80])


# Checked at start (randstream.transport): each returns None, or what is wrong --------------------

def _check_socket() -> str | None:
    from gunicorn.http import wsgi

    code = wsgi.default_environ.__code__  # a dict display's keys are one tuple constant
    keys = {k for c in code.co_consts if isinstance(c, tuple) for k in c} | code_names(
        wsgi.default_environ)
    if SOCKET not in keys:
        return "gunicorn.http.wsgi.default_environ no longer sets environ['gunicorn.socket']"
    return None


def _check_stop_iteration() -> str | None:
    from gunicorn.workers.base_async import AsyncWorker
    from gunicorn.workers.ggevent import GeventWorker

    if not issubclass(GeventWorker, AsyncWorker):
        return "GeventWorker is no longer an AsyncWorker"
    for method in ("handle_request", "handle"):
        if "StopIteration" not in code_names(getattr(AsyncWorker, method, None)):
            return f"AsyncWorker.{method} no longer ends a connection on StopIteration"
    return None


EXTENSION_POINTS = [
    ExtensionPoint("gunicorn environ['gunicorn.socket']",
                   "a WebSocket's connection is handed to the direct path", _check_socket),
    ExtensionPoint("gunicorn AsyncWorker.handle_request and handle (StopIteration)",
                   "a handed-over connection's greenlet ends without an answer",
                   _check_stop_iteration),
]
