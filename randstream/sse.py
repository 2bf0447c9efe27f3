"""GET /api/stream: the readings as Server-Sent Events, for curl -N and EventSource.

No task or queue per reading per client: every SSE response waits on one shared
event that the fan-out (fanout.py) sets for each new reading, then reads what it has not
sent yet from the history ring, at its own pace. The bytes of each event are encoded once. A
client that falls more than --history readings behind is dropped (it reconnects with
Last-Event-ID and gets the capped replay), so nothing is buffered per client but the
socket's own send buffer.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict

from flask import Blueprint, Response, current_app, jsonify, request

from .history import History, Reading
from .refusals import RETRY_AFTER
from .web import BadRequest, bad_request, check_args, foreign_stream, int_arg

log = logging.getLogger(__name__)

HEARTBEAT = 15.0  # seconds between comment lines on a quiet stream
BATCH = 256  # readings written per wake-up
RETRY_MS = 2000  # what EventSource waits before reconnecting
ENCODED_KEPT = 1024  # encoded events kept for all clients
PATH = "/api/stream"  # stack.py's Unbuffered writes each event of it at once

bp = Blueprint("sse", __name__)
bp.register_error_handler(BadRequest, bad_request)


class Feed:
    """The shared wake-up for every SSE response, and each event's bytes, encoded once."""

    def __init__(self, history: History, history_size: int) -> None:
        self.history = history
        self.history_size = history_size
        self.clients = 0
        self.opened = 0
        self.dropped = 0  # clients cut off for being too far behind
        self.closed = False
        self.beats = 0  # heartbeats so far, from one shared task (start_heartbeat)
        self._beating = False
        self._event = threading.Event()
        self._encoded: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def publish(self, reading: Reading | None = None) -> None:
        """A new reading is in the history (or a heartbeat is due): wake every waiting response."""
        event, self._event = self._event, threading.Event()
        event.set()

    def start_heartbeat(self, spawn, sleep) -> None:
        """One task wakes every response each HEARTBEAT seconds: no timer per client wait."""
        self._beating = True

        def beat() -> None:
            while not self.closed:
                sleep(HEARTBEAT)
                self.beats += 1
                self.publish()

        spawn(beat)

    def close(self) -> None:
        """Server stop: every response ends at its next wake-up, which is now."""
        self.closed = True
        self.publish()

    def encode(self, reading: Reading) -> bytes:
        data = self._encoded.get(reading.seq)
        if data is None:
            payload = json.dumps(reading.to_dict(), separators=(",", ":"))
            # The id carries the stream's: EventSource sends it back as Last-Event-ID.
            data = (f"id: {self.history.stream_id}:{reading.seq}\nevent: reading\n"
                    f"data: {payload}\n\n").encode()
            with self._lock:
                self._encoded[reading.seq] = data
                while len(self._encoded) > ENCODED_KEPT:
                    self._encoded.popitem(last=False)
        return data

    def events(self, after: int):
        """The byte chunks of one response: replay after `after`, then live, until stop."""
        history = self.history
        yield f"retry: {RETRY_MS}\n\n".encode()
        # Capped like resume; an id from the future (a server that started afresh, say with
        # --db :memory:) means "from now": else this client would wait for that seq forever.
        cursor = max(min(after, history.last_seq), history.last_seq - self.history_size)
        beat = self.beats
        while not self.closed:
            wake = self._event  # taken before reading: a reading after this sets it
            newest = history.latest_reading()
            if newest is not None and newest.seq == cursor + 1:
                readings = [newest]  # the live case: no copy of the ring per client
            elif newest is None or newest.seq <= cursor:
                readings = []
            else:
                readings = history.after(cursor, BATCH)
            if readings:
                cursor = readings[-1].seq
                yield b"".join(self.encode(r) for r in readings)
                if history.last_seq - cursor > self.history_size:
                    self.dropped += 1
                    yield b": too far behind; reconnect to resume from Last-Event-ID\n\n"
                    return
                continue
            woken = wake.wait(None if self._beating else HEARTBEAT)
            if self.closed:
                return
            if not woken or self.beats != beat:
                beat = self.beats
                yield b": heartbeat\n\n"


class _Events:
    """The response body: counts the client from the first byte to close(), exactly once."""

    def __init__(self, feed: Feed, admission, environ, after: int) -> None:
        self.feed, self.admission, self.environ = feed, admission, environ
        self.chunks = feed.events(after)
        self.open = True

    def __iter__(self):
        return self.chunks

    def close(self) -> None:
        if self.open:
            self.open = False
            self.feed.clients -= 1
            self.admission.release(self.environ)
            self.chunks.close()


def init_app(app) -> None:
    app.register_blueprint(bp)


def parse_event_id(text: str) -> tuple[str | None, int]:
    """An event id sent back as Last-Event-ID: `STREAM:SEQ` as we send them, or a bare seq
    (what clients from before stream ids send; their stream is taken as ours)."""
    stream, colon, seq = text.rpartition(":")
    if (not seq.isascii() or not seq.isdigit() or len(seq) > 16
            or len(stream) > 64 or (colon and not stream)):
        raise BadRequest("Last-Event-ID must be a seq, or STREAM:SEQ as the events' ids are")
    return stream or None, int(seq)


def _after() -> int:
    """Where the replay starts: Last-Event-ID (an EventSource reconnecting) wins over ?after.
    A seq of another stream (the id's stream, or ?stream=, is not ours) replays the newest
    readings, as ?after=0 does: its seq means nothing here."""
    check_args({"after", "stream"})
    after = int_arg("after", None, 0, 2**53)
    foreign = foreign_stream()
    stream = current_app.extensions["stream"]
    last_id = request.headers.get("Last-Event-ID")
    if last_id is not None and last_id.strip():
        id_stream, after = parse_event_id(last_id.strip())
        if id_stream is not None:
            foreign = id_stream != stream.history.stream_id
    elif after is None:
        return stream.history.last_seq  # no replay asked: live
    return 0 if foreign else after


@bp.get(PATH)
def events():
    stream = current_app.extensions["stream"]
    after = _after()
    if stream.feed.closed:
        return jsonify(error="the server is stopping"), 503
    # The origin policy, the connection cap and the per-address limit; counted until close().
    refusal = stream.admission.hold(request.environ)
    if refusal is not None:
        status, message = refusal
        headers = {"Retry-After": str(RETRY_AFTER)} if status.startswith(("503", "429")) else {}
        return jsonify(error=message), int(status[:3]), headers
    feed = stream.feed
    feed.clients += 1
    feed.opened += 1
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    origin = request.headers.get("Origin")
    if origin:  # allowed by the policy above: a listed cross origin may read it
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    return Response(_Events(feed, stream.admission, request.environ, after),
                    mimetype="text/event-stream", headers=headers)
