"""Live events over Socket.IO: a snapshot on connect, `resume` to fill gaps, nothing else."""

from __future__ import annotations

import logging

from flask import request
from flask_socketio import SocketIO, emit

from .history import History, Reading
from .transport import Transport

log = logging.getLogger(__name__)

# A client that asks again before reading the answers (each up to --history readings) would
# make this process hold them all; past this many queued packets, resume is refused. Above
# the guard's burst of 30, so a client within the rate limit is always answered.
MAX_WAITING_ANSWERS = 32


class Live:
    """The Socket.IO side of the stream. Clients read; nothing they send changes it."""

    def __init__(self, socketio: SocketIO, history: History, stream_info: dict, history_size: int,
                 transport: Transport) -> None:
        self.socketio = socketio
        self.transport = transport
        self.history = history
        self.stream_info = stream_info
        self.history_size = history_size
        self.clients = 0
        self.connects = 0
        self.disconnects = 0
        self.resumes = 0
        self.rejected: dict[str, int] = {}
        self._snapshot: tuple[int, object] | None = None

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
        # emit(), minus encoding the same snapshot again for every client (on the fast path).
        self.transport.send_prepared(self.socketio, request.sid, self.snapshot())

    def snapshot(self):
        """The `history` packet for new clients, encoded once per reading, not per client.

        900 readings take milliseconds to encode; after a restart thousands of clients
        reconnect within seconds and would each pay for the same bytes.
        """
        key = self.history.last_seq
        cached = self._snapshot
        if cached is None or cached[0] != key:
            payload = self.history_payload(self.history.latest(self.history_size))
            cached = self._snapshot = (key, self.transport.prepare_event(
                self.socketio, "history", payload))
        return cached[1]

    def on_disconnect(self, reason=None) -> None:
        self.clients -= 1
        self.disconnects += 1

    def on_resume(self, data=None) -> None:
        after = parse_resume(data)
        if isinstance(after, str):
            self.reject("resume", after)
            return
        if self.answers_waiting() > MAX_WAITING_ANSWERS:
            self.reject("resume", "resume: the previous answers have not been read yet")
            return
        self.resumes += 1
        # A client away longer than the cap gets the newest readings; the rest is a gap.
        after = max(after, self.history.last_seq - self.history_size)
        emit("history", self.history_payload(self.history.after(after, self.history_size)))

    def answers_waiting(self) -> int:
        """Packets queued for the requesting client that it has not taken yet."""
        return self.transport.queued_packets(self.socketio, request.sid)

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
