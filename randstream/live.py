"""Live events over Socket.IO: a snapshot on connect, `resume` to fill gaps, nothing else."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from flask import request
from flask_socketio import SocketIO, emit

from .history import History, Reading
from .transport import Transport

log = logging.getLogger(__name__)

# A client that asks again before reading the answers (each up to --history readings) would
# make this process hold them all; past this many unread packets, resume is refused. A
# client that reads asks once per reconnect.
MAX_WAITING_ANSWERS = 4
# Resume answers take encoding time (900 readings: milliseconds each) that the ticker would
# wait behind. They share a budget, in seconds of encoding per second and at once: within
# it an answer goes out at once, past it requests wait in one queue, served as the budget
# refills, and past MAX_QUEUED_RESUMES they are refused.
RESUME_SHARE = 0.25
RESUME_BURST = 0.005
MAX_QUEUED_RESUMES = 1000
MAX_CACHED_ANSWERS = 16  # distinct `after` values kept encoded until the next reading


class Live:
    """The Socket.IO side of the stream. Clients read; nothing they send changes it."""

    def __init__(self, socketio: SocketIO, history: History, stream_info: dict, history_size: int,
                 transport: Transport, welcome: Callable[[], object] | None = None) -> None:
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
        self.welcome = welcome  # a prepared event each client gets after its `history`
        self._snapshot: tuple[int, object] | None = None
        self.answers = Answers(self)

        socketio.on_event("connect", unlinked(self.on_connect))
        socketio.on_event("disconnect", unlinked(self.on_disconnect))
        socketio.on_event("resume", unlinked(self.on_resume))
        socketio.on_error_default(self.on_handler_error)

    def broadcast(self, reading: Reading) -> None:
        self.socketio.emit("random_number", reading.to_dict())

    def history_payload(self, readings: list[Reading]) -> dict:
        return {"readings": [r.to_dict() for r in readings], "stream": self.stream_info}

    def on_connect(self, auth=None) -> None:
        self.clients += 1
        self.connects += 1
        if not (isinstance(auth, dict) and "after" in auth and self.resume_on_connect(auth)):
            # emit(), minus encoding the same snapshot again for every client (on the fast path).
            self.transport.send_prepared(self.socketio, request.sid, self.snapshot())
        if self.welcome is not None:  # a resume answer that must wait (Answers) comes after it
            self.transport.send_prepared(self.socketio, request.sid, self.welcome())

    def resume_on_connect(self, auth) -> bool:
        """A client back after a drop says what it holds, in its CONNECT packet's auth
        `{"after": seq}` (as Socket.IO's own connection state recovery does): it gets the
        readings since, as `resume` would answer, instead of the whole snapshot and then a
        resume. Its `"stream"`, the id of the stream those readings are of, says whether
        `after` means anything here. False if the snapshot is due after all: a malformed
        `after` or `stream` (also an `error`), another stream's `after` (its id is not ours,
        or, from a client that sends none, a seq this stream has not reached), a full resume
        queue. Other auth (another client's token) is not ours and is ignored."""
        after = parse_after(auth["after"])
        if isinstance(after, str):
            self.reject("resume", after)
            return False
        stream = auth.get("stream", self.history.stream_id)  # none: a client from before ids
        if not is_stream_id(stream):
            self.reject("resume", "resume: stream must be a stream id (a string)")
            return False
        if (stream != self.history.stream_id or after > self.history.last_seq
                or not self.answers.request(request.sid, after)):
            return False
        self.resumes += 1
        return True

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
        self.answers.forget(request.sid)
        self.clients -= 1
        self.disconnects += 1

    def on_resume(self, data=None) -> None:
        after = parse_resume(data)
        if isinstance(after, str):
            self.reject("resume", after)
            return
        sid = request.sid
        if self.answers_waiting() > MAX_WAITING_ANSWERS or sid in self.answers.queued:
            # One error until an answer goes out: each costs as much as the request.
            if sid not in self.answers.warned:
                self.answers.warned.add(sid)
                self.reject("resume", "resume: the previous answers have not been read yet")
            else:
                self.rejected["resume"] = self.rejected.get("resume", 0) + 1
            return
        if not self.answers.request(sid, after):
            self.reject("resume", "resume: the server is busy; ask again in a few seconds")
            return
        self.answers.warned.discard(sid)
        self.resumes += 1

    def answer(self, after: int):
        """The `history` event answering resume(after), prepared (encoded) for sending."""
        # A client away longer than the cap gets the newest readings; the rest is a gap.
        after = max(after, self.history.last_seq - self.history_size)
        payload = self.history_payload(self.history.after(after, self.history_size))
        return self.transport.prepare_event(self.socketio, "history", payload)

    def answers_waiting(self) -> int:
        """Packets queued for the requesting client that it has not taken yet."""
        return self.transport.queued_packets(self.socketio, request.sid)

    def reject(self, reason: str, message: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        emit("error", {"message": message})

    def on_handler_error(self, exc: Exception) -> None:
        log.error("socket.io handler failed for %s", request.sid, exc_info=exc)
        self.reject("internal", "internal error; the stream goes on")


class Answers:
    """Resume answers: encoded once per `after` and reading, within a shared time budget.

    Requests within the budget are answered at once, in the handler; the rest wait in one
    queue that one task serves as the budget refills, so that resume work never holds the
    ticker up for more than a few milliseconds at a time.
    """

    def __init__(self, live: Live) -> None:
        self.live = live
        self.socketio = live.socketio
        self.waiting: deque[tuple[str, int]] = deque()
        self.queued: set[str] = set()  # sids with a request waiting
        self.warned: set[str] = set()  # sids told their answers wait unread
        self.cache: OrderedDict[int, object] = OrderedDict()  # after -> the prepared answer
        self.cache_seq = -1  # last_seq the cached answers were made for
        self.budget = RESUME_BURST  # seconds of encoding left; refilled at RESUME_SHARE
        self.stamp = time.monotonic()
        self.serving = False
        self._lock = threading.Lock()  # threading mode: handlers run in threads

    def request(self, sid: str, after: int) -> bool:
        """Answer now or queue; False if the queue is full."""
        with self._lock:
            # Already encoded (a restart's herd all ask after the same seq): sending costs
            # what a broadcast does, so it neither waits for nor spends the budget.
            cached = self._cached(after)
        if cached is not None:
            self.live.transport.send_prepared(self.socketio, sid, cached)
            return True
        with self._lock:
            if not self.waiting and self._refill() > 0:
                now = True
            elif len(self.queued) >= MAX_QUEUED_RESUMES:
                return False
            else:
                now = False
                if len(self.waiting) > 2 * MAX_QUEUED_RESUMES:  # requests of clients gone
                    self.waiting = deque(w for w in self.waiting if w[0] in self.queued)
                self.waiting.append((sid, after))
                self.queued.add(sid)
                start, self.serving = not self.serving, True
        if now:
            self._send(sid, after)
        elif start:
            self.socketio.start_background_task(self._serve)
        return True

    def forget(self, sid: str) -> None:
        """A client left: its waiting request is skipped (and no longer counts)."""
        with self._lock:
            self.queued.discard(sid)
            self.warned.discard(sid)

    def _refill(self) -> float:
        now = time.monotonic()
        self.budget = min(RESUME_BURST, self.budget + (now - self.stamp) * RESUME_SHARE)
        self.stamp = now
        return self.budget

    def _serve(self) -> None:
        while True:
            with self._lock:
                if not self.waiting:
                    self.serving = False
                    return
                while self.waiting and self.waiting[0][0] not in self.queued:
                    self.waiting.popleft()  # its client left meanwhile
                if not self.waiting:
                    self.serving = False
                    return
                budget = self._refill()
                if budget > 0:
                    sid, after = self.waiting.popleft()
                    self.queued.discard(sid)
            if budget > 0:
                try:
                    self._send(sid, after)
                except Exception:  # the queue must outlive one bad connection
                    log.exception("resume answer failed; the queue goes on")
                self.socketio.sleep(0)  # the ticker and the others go first
            else:
                self.socketio.sleep(-budget / RESUME_SHARE)

    def _send(self, sid: str, after: int) -> None:
        # One prepared answer (on the fast path, one frame) shared by every client it answers.
        self.live.transport.send_prepared(self.socketio, sid, self._answer(after))

    def _cached(self, after: int):
        """The answer to resume(after) if it is encoded for the newest reading, else None."""
        last_seq = self.live.history.last_seq
        if self.cache_seq != last_seq:
            return None
        return self.cache.get(max(after, last_seq - self.live.history_size))

    def _answer(self, after: int):
        last_seq = self.live.history.last_seq
        key = max(after, last_seq - self.live.history_size)
        with self._lock:
            if self.cache_seq != last_seq:
                self.cache, self.cache_seq = OrderedDict(), last_seq
            cached = self.cache.get(key)
            if cached is not None:
                self.cache.move_to_end(key)
        if cached is not None:
            return cached
        started = time.perf_counter()
        cached = self.live.answer(key)
        with self._lock:
            self.budget -= time.perf_counter() - started
            if self.cache_seq == last_seq:
                self.cache[key] = cached
                while len(self.cache) > MAX_CACHED_ANSWERS:
                    self.cache.popitem(last=False)  # the least recently asked
        return cached


def unlinked(handler):
    """`handler`, leaving no reference cycle behind.

    Flask-SocketIO runs each handler in a Flask request context made from the
    connection's handshake environ; Flask finds no route for the Socket.IO path and keeps
    the NotFound in `request.routing_exception`, whose traceback holds the frames of the
    call (often up to engine.io's socket and our Connection). Each event so left a cycle
    of ~80 objects, freed only by a full collection (server.FullCollections, every 60 s):
    after a herd of reconnects the dropped connections and their replacements were in
    memory together (tests/test_herd.py).
    """
    @functools.wraps(handler)
    def run(*args):
        try:
            return handler(*args)
        finally:
            request.routing_exception = None

    return run


def parse_resume(data) -> int | str:
    """The `after` seq of a resume request, or an error message for the client."""
    if not isinstance(data, dict) or set(data) != {"after"}:
        return 'resume expects {"after": <seq>}'
    return parse_after(data["after"])


def parse_after(after) -> int | str:
    """A seq a client says it holds (resume's, or its CONNECT's), or an error message."""
    if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < 2**53:
        return "resume: after must be a whole number >= 0"
    return after


def is_stream_id(stream) -> bool:
    """Whether a client's `stream` can be a stream id (any other one just differs from ours)."""
    return isinstance(stream, str) and 0 < len(stream) <= 64


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
