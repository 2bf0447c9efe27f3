"""Live events over Socket.IO: a snapshot on connect, `resume` to fill gaps, nothing else."""

from __future__ import annotations

import logging

from flask import request
from flask_socketio import SocketIO, emit

from .history import History, Reading

log = logging.getLogger(__name__)


class Live:
    """The Socket.IO side of the stream. Clients read; nothing they send changes it."""

    def __init__(self, socketio: SocketIO, history: History, stream_info: dict, history_size: int) -> None:
        self.socketio = socketio
        self.history = history
        self.stream_info = stream_info
        self.history_size = history_size
        self.clients = 0
        self.connects = 0
        self.disconnects = 0
        self.resumes = 0
        self.rejected: dict[str, int] = {}

        socketio.on_event("connect", self.on_connect)
        socketio.on_event("disconnect", self.on_disconnect)
        socketio.on_event("resume", self.on_resume)
        socketio.on_error_default(self.on_handler_error)

    def broadcast(self, reading: Reading) -> None:
        self.socketio.emit("random_number", reading.to_dict())

    def history_payload(self, readings: list[Reading]) -> dict:
        return {"readings": [r.to_dict() for r in readings], "stream": self.stream_info}

    def on_connect(self, auth=None) -> None:
        self.clients += 1
        self.connects += 1
        emit("history", self.history_payload(self.history.latest(self.history_size)))

    def on_disconnect(self, reason=None) -> None:
        self.clients -= 1
        self.disconnects += 1

    def on_resume(self, data=None) -> None:
        after = parse_resume(data)
        if isinstance(after, str):
            self.reject("resume", after)
            return
        self.resumes += 1
        # A client away longer than the cap gets the newest readings; the rest is a gap.
        after = max(after, self.history.last_seq - self.history_size)
        emit("history", self.history_payload(self.history.after(after, self.history_size)))

    def reject(self, reason: str, message: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        emit("error", {"message": message})

    def on_handler_error(self, exc: Exception) -> None:
        log.error("socket.io handler failed for %s", request.sid, exc_info=exc)
        self.reject("internal", "internal error; the stream goes on")


def parse_resume(data) -> int | str:
    """The `after` seq of a resume request, or an error message for the client."""
    if not isinstance(data, dict) or set(data) != {"after"}:
        return 'resume expects {"after": <seq>}'
    after = data["after"]
    if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < 2**53:
        return "resume: after must be a whole number >= 0"
    return after


def origin_policy(extra_origins: tuple[str, ...]):
    """Same-origin, plus the --cors-origins allow-list ("*" allows any)."""
    allow_any = "*" in extra_origins

    def allowed(origin: str | None, environ: dict) -> bool:
        if origin is None or allow_any or origin in extra_origins:
            return True
        host = environ.get("HTTP_X_FORWARDED_HOST", environ.get("HTTP_HOST", "")).split(",")[0].strip()
        scheme = environ.get("HTTP_X_FORWARDED_PROTO", environ.get("wsgi.url_scheme", "http"))
        return origin == f"{scheme.split(',')[0].strip()}://{host}"

    return allowed
