"""The door: WSGI middleware in front of everything the app serves.

The one place the security headers are added, to every response (Flask's routes,
Engine.IO's answers, refusals); Engine.IO requests the guard refuses are answered here as
JSON before Engine.IO runs; a polling POST body is read and checked first; no traceback
reaches a client.
"""

from __future__ import annotations

import io
import json
import logging
from urllib.parse import parse_qs

from .guard import RETRY_AFTER, Guard
from .headers import SECURITY_HEADERS
from .limits import CONTROL_PACKETS, CONTROL_RATE, polling_payload_error
from .transport import engineio as eio_adapter

log = logging.getLogger(__name__)


class Door:
    """WSGI middleware: security headers on every response, JSON refusals, no tracebacks."""

    def __init__(self, guard: Guard, app) -> None:
        self.guard = guard
        self.app = app
        self.path = getattr(app, "engineio_path", "/socket.io/")
        self.headers = list(SECURITY_HEADERS.items())

    def __call__(self, environ, start_response):
        started = False

        def with_headers(status, headers, exc_info=None):
            nonlocal started
            started = True
            present = {name.lower() for name, _ in headers}
            headers = list(headers) + [(n, v) for n, v in self.headers if n.lower() not in present]
            if exc_info:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        try:  # werkzeug decodes the query as strict UTF-8 when a route reads it: a 500
            environ.get("QUERY_STRING", "").encode("latin-1").decode("utf-8")
        except UnicodeError:
            return self._json(with_headers, "400 Bad Request",
                              "the query string is not valid UTF-8")
        if environ.get("PATH_INFO", "").startswith(self.path):
            query = parse_qs(environ.get("QUERY_STRING", ""))
            refusal = (self._check_upgrade(environ) or self.guard.refusal(environ, query)
                       or self._check_post(environ, query))
            if refusal is not None:
                return self._json(with_headers, *refusal)
        try:
            return self.app(environ, with_headers)
        except Exception:
            if started or environ.get("HTTP_UPGRADE", "").lower() == "websocket":
                raise  # too late for an answer; the server closes the connection
            log.exception("request failed: %s %s",
                          environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            return self._json(with_headers, "500 Internal Server Error", "internal server error")

    @staticmethod
    def _check_upgrade(environ) -> tuple[str, str] | None:
        """A WebSocket upgrade must be RFC 6455's: eventlet answers one without a key with
        its pre-standard (hixie) handshake or a 500, after engine.io opened a session."""
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            return None
        if not environ.get("HTTP_SEC_WEBSOCKET_KEY") or \
                environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
            return "400 Bad Request", "a WebSocket upgrade needs Sec-WebSocket-Key and version 13"
        return None

    def _check_post(self, environ, query: dict) -> tuple[str, str] | None:
        """A polling POST is read and checked here; engine.io logs tracebacks or stalls on junk."""
        sid = query.get("sid", [None])[0]
        state = eio_adapter.session_state(self.guard.eio, sid)
        if environ.get("REQUEST_METHOD") != "POST" or state is None:
            return None  # engine.io answers the rest itself, with 400 "Invalid session" etc.
        if state == "closed":  # engine.io would raise KeyError here: an HTTP 500
            return "400 Bad Request", "this session is closed; open a new connection"
        limit = self.guard.eio.max_http_buffer_size
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= limit:
            self.guard._bad_input(sid, "oversized", f"a polling body of {length} bytes")
            return "413 Request Entity Too Large", f"a request body may have at most {limit} bytes"
        body = environ["wsgi.input"].read(length)
        problem = polling_payload_error(body)
        if problem is not None:
            self.guard._bad_input(sid, "bad_packet", "an invalid polling payload")
            return "400 Bad Request", problem
        parts = body.decode("utf-8").split("\x1e")
        if not all(self.guard.control_ok(sid) for p in parts if p[:1] in CONTROL_PACKETS):
            self.guard.close(sid)
            return "429 Too Many Requests", f"at most {CONTROL_RATE:g} pongs or noops a second"
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return None

    @staticmethod
    def _json(start_response, status: str, message: str):
        body = json.dumps({"error": message}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if status.startswith(("503", "429")):
            headers.append(("Retry-After", str(RETRY_AFTER)))
        start_response(status, headers)
        return [body]
