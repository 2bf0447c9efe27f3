"""Where readings come from: --source random (default), module:callable, stdin or http.

A source only produces numbers; the ticker (ticker.py) turns each one into a reading
(seq, ts), stores it and broadcasts it. Two shapes:

- "tick" and "pull" sources are asked once per tick: `random` draws in the ticker's
  own task; a pull callable runs in a real OS thread (off_loop), so one that blocks
  for seconds delays no ping, client or tick.
- "push" sources hand values over when they arrive: `stdin` reads lines off the event
  loop, `http` takes POST /api/readings.
"""

from __future__ import annotations

import hmac
import importlib
import importlib.util
import json
import logging
import math
import numbers
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flask import Blueprint, current_app, jsonify, request

from .config import ConfigError, Settings
from .limits import TokenBucket

log = logging.getLogger(__name__)

MAX_ABS_INT = 2**53  # larger integers do not survive JSON in a browser
MAX_LINE = 4096  # bytes of one stdin line
MAX_BODY = 16 * 1024  # bytes of one POST /api/readings
MAX_BATCH = 100  # values in one POST
INGEST_RATE = 50.0  # POST /api/readings per second, sustained
INGEST_BURST = 100


class BadValue(ValueError):
    """Not a reading: the message says why, `kind` groups alike problems for logs and metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_value(value) -> int | float:
    """An int (|v| <= 2**53) or a finite float, else BadValue."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadValue("not_a_number", f"not a number: {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        value = int(value)
        if abs(value) > MAX_ABS_INT:
            raise BadValue("out_of_range", "integer beyond +-2**53")
        return value
    value = float(value)
    if not math.isfinite(value):
        raise BadValue("not_finite", "not a finite number")
    return value


class Problems:
    """Bad values and failures by kind: each kind logged once, all counted."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.counts: dict[str, int] = {}
        self.last: str | None = None

    def report(self, kind: str, message: str) -> None:
        if kind not in self.counts:
            log.warning("%s: %s (further ones of this kind are only counted in /metrics)",
                        self.what, message)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.last = message[:200]

    def health(self) -> dict:
        return {"errors": dict(self.counts), "last_error": self.last}


def off_loop(async_mode: str) -> Callable[[Callable], object]:
    """call(fn) -> fn() run in a real OS thread; only the calling task waits for it."""
    if async_mode == "eventlet":
        from eventlet import tpool

        return tpool.execute
    if async_mode == "gevent":
        import gevent

        return lambda fn: gevent.get_hub().threadpool.apply(fn)
    return lambda fn: fn()  # threading: the caller is a thread of its own already


class RandomSource:
    """randint(lo, hi) from its own random.Random(seed): today's stream, unchanged."""

    kind = "random"
    mode = "tick"
    uniform = True  # integers in a declared range: histogram over it, chi-square

    def __init__(self, lo: int, hi: int, seed: int | None) -> None:
        self.lo, self.hi, self.seed = lo, hi, seed
        self.rng = random.Random(seed)

    def reseed(self, last_seq: int) -> None:
        # A seeded stream is reproducible per (seed, restart point): a restart reseeds
        # from the seq it continues at, instead of replaying the values already drawn.
        self.rng = random.Random(None if self.seed is None else f"{self.seed}:{last_seq}")

    def draw(self) -> int:
        return self.rng.randint(self.lo, self.hi)

    def describe(self) -> str:
        return f"values in [{self.lo}, {self.hi}]"

    def health(self) -> dict:
        return {"kind": self.kind}


class PullSource:
    """A callable asked once per tick for a number, or None for no reading this tick."""

    kind = "pull"
    mode = "pull"
    uniform = False

    def __init__(self, spec: str, fn: Callable[[], object]) -> None:
        self.spec = spec
        self.fn = fn
        self.problems = Problems(f"source {spec}")
        self.calls = 0
        self.skipped = 0  # ticks that found the previous call still running
        self.busy_since: float | None = None

    def pull(self, call: Callable[[Callable], object]) -> int | float | None:
        """One call through `call` (off_loop); problems are reported here, never raised."""
        self.calls += 1
        self.busy_since = time.monotonic()
        try:
            value = call(self.fn)
        except Exception as exc:
            self.problems.report(f"raised {type(exc).__name__}", f"raised {type(exc).__name__}: {exc}")
            return None
        finally:
            self.busy_since = None
        if value is None:
            return None
        try:
            return check_value(value)
        except BadValue as exc:
            self.problems.report(exc.kind, f"returned {value!r:.60}: {exc}")
            return None

    def skip(self) -> None:
        if self.skipped == 0:
            log.warning("source %s: still running at the next tick; that tick is skipped "
                        "(further skips are only counted in /metrics)", self.spec)
        self.skipped += 1

    def describe(self) -> str:
        return f"pulled from {self.spec}"

    def health(self) -> dict:
        busy = None if self.busy_since is None else round(time.monotonic() - self.busy_since, 3)
        return {"kind": self.kind, "callable": self.spec, "calls": self.calls,
                "skipped_ticks": self.skipped, "busy_for": busy, **self.problems.health()}


def parse_line(raw: bytes) -> int | float:
    """One stdin line as a number, else BadValue."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadValue("not_utf8", "a line that is not UTF-8") from None
    if not text:
        raise BadValue("empty", "an empty line")
    try:
        value = int(text) if text.lstrip("+-").isdigit() and len(text) <= 20 else float(text)
    except ValueError:
        raise BadValue("not_a_number", f"a line that is not a number: {text[:40]!r}") from None
    return check_value(value)


class StdinSource:
    """One number per line on standard input; a reading per valid line, as it arrives."""

    kind = "stdin"
    mode = "push"
    uniform = False

    def __init__(self, fd: int = 0, green_read: bool = False) -> None:
        # os.read on the descriptor, not sys.stdin: a thread blocked in a buffered read
        # holds the buffer's lock, and the interpreter's exit then dies on that lock.
        self.fd = fd
        # eventlet's patched os.read waits in the hub for a pipe or tty (and reads a file
        # directly): no thread needed, and none for eventlet's exit to wait for (it joins
        # its thread pool, where a read blocked on a quiet pipe would never return).
        self.green_read = green_read
        self.problems = Problems("stdin")
        self.lines = 0
        self.ended_at: float | None = None

    def run(self, record: Callable[[int | float], object], call: Callable[[Callable], object],
            running: Callable[[], bool]) -> None:
        """Read until end of input; each read happens in an OS thread (`call`)."""
        if self.green_read:
            def read() -> bytes:
                return os.read(self.fd, 65536)
        else:
            def read() -> bytes:
                return call(lambda: os.read(self.fd, 65536))
        for line in split_lines(read, running):
            self.lines += 1
            if line is None:
                self.problems.report("too_long", f"a line longer than {MAX_LINE} bytes")
                continue
            try:
                value = parse_line(line)
            except BadValue as exc:
                self.problems.report(exc.kind, exc.args[0])
                continue
            record(value)
            # A file or a fast pipe is always readable: without a turn for the others the
            # event loop would record every line before serving anyone.
            time.sleep(0)
        if running():
            self.ended_at = time.time()
            log.info("stdin: end of input after %d line(s); serving the history", self.lines)

    def describe(self) -> str:
        return "one number per line on stdin"

    def health(self) -> dict:
        return {"kind": self.kind, "lines": self.lines, "ended": self.ended_at is not None,
                "ended_at": self.ended_at, **self.problems.health()}


def split_lines(read: Callable[[], bytes], running: Callable[[], bool]):
    """Lines (without the newline) from successive reads; None for a line over MAX_LINE."""
    pending = b""
    skipping = False  # inside a line already reported as too long
    while running():
        chunk = read()
        if not chunk:
            break
        pending += chunk
        while True:
            end = pending.find(b"\n")
            if end < 0:
                break
            line, pending = pending[:end], pending[end + 1:]
            if skipping:
                skipping = False
            else:
                yield None if len(line) > MAX_LINE else line
        if len(pending) > MAX_LINE and not skipping:
            skipping, pending = True, b""
            yield None
        elif skipping:
            pending = b""
    if pending and not skipping and running():
        yield None if len(pending) > MAX_LINE else pending


class IngestError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_ingest_body(body: bytes) -> list[int | float]:
    """`{"value": n}` or `{"values": [n, ...]}` (1 to MAX_BATCH) as values; IngestError(400) else."""
    if len(body) > MAX_BODY:
        raise IngestError(413, f"a body may have at most {MAX_BODY} bytes")

    def no_constant(name):
        raise ValueError(f"{name} is not a number here")

    try:
        data = json.loads(body.decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise IngestError(400, 'the body must be JSON: {"value": <number>}') from None
    if isinstance(data, dict) and set(data) == {"value"}:
        values = [data["value"]]
    elif isinstance(data, dict) and set(data) == {"values"} and isinstance(data["values"], list):
        values = data["values"]
        if not 1 <= len(values) <= MAX_BATCH:
            raise IngestError(400, f"values must hold 1 to {MAX_BATCH} numbers")
    else:
        raise IngestError(400, 'expected {"value": <number>} or {"values": [<number>, ...]}')
    try:
        return [check_value(v) for v in values]
    except BadValue as exc:
        raise IngestError(400, f"a value is {exc}") from None


class HttpSource:
    """POST /api/readings with a bearer token; the route exists only with this source."""

    kind = "http"
    mode = "push"
    uniform = False

    def __init__(self, token: str, rate: float = INGEST_RATE, burst: int = INGEST_BURST) -> None:
        self.token = token.encode()
        self.bucket = TokenBucket(rate, burst, time.monotonic())
        self.lock = threading.Lock()
        self.problems = Problems("POST /api/readings")
        self.accepted = 0
        self.record: Callable[[int | float], object] | None = None

    def run(self, record, call, running) -> None:
        self.record = record  # readings arrive with requests, not in this task

    def authorized(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        # compare_digest: the time taken does not tell how much of the token was right
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)

    def allow(self) -> bool:
        with self.lock:
            return self.bucket.take(time.monotonic())

    def describe(self) -> str:
        return "pushed to POST /api/readings"

    def health(self) -> dict:
        return {"kind": self.kind, "accepted": self.accepted, **self.problems.health()}


INGEST_PATH = "/api/readings"  # guarded by --ingest-token; access.py's guard lets it through
ingest = Blueprint("ingest", __name__)


@ingest.post(INGEST_PATH)
def post_readings():
    source: HttpSource = current_app.extensions["stream"].ticker.source
    if not source.authorized(request.headers.get("Authorization")):
        source.problems.report("unauthorized", "a request without the right bearer token")
        return jsonify(error="a valid 'Authorization: Bearer <token>' header is required"), 401, {
            "WWW-Authenticate": 'Bearer realm="readings"'}
    if not source.allow():
        source.problems.report("rate_limit", f"over {INGEST_RATE:g} requests a second")
        return jsonify(error=f"too many requests: at most {INGEST_RATE:g} a second"), 429, {
            "Retry-After": "1"}
    length = request.content_length
    if length is None and request.headers.get("Transfer-Encoding"):
        # A chunked body reads as empty here: say so instead of "not JSON".
        source.problems.report("no_length", "a body without Content-Length")
        return jsonify(error="send the body with a Content-Length header"), 411
    if length is not None and length > MAX_BODY:
        source.problems.report("too_large", f"a body of {length} bytes")
        return jsonify(error=f"a body may have at most {MAX_BODY} bytes"), 413
    body = request.stream.read(MAX_BODY + 1)
    try:
        values = parse_ingest_body(body)
    except IngestError as exc:
        source.problems.report(f"bad_body_{exc.status}", str(exc))
        return jsonify(error=str(exc)), exc.status
    if source.record is None:
        return jsonify(error="the stream is not running yet"), 503
    readings = [source.record(v) for v in values]
    source.accepted += len(readings)
    return jsonify(readings=[r.to_dict() for r in readings if r is not None]), 201


def load_callable(spec: str) -> Callable[[], object]:
    """`package.module:name` or `path/to/file.py:name` -> the callable, or ConfigError."""
    target, _, name = spec.rpartition(":")
    where = f"--source {spec}"
    if not target or not name.isidentifier():
        raise ConfigError(f"{where}: expected module:callable or path/to/file.py:callable")
    try:
        if target.endswith(".py") or os.sep in target or "/" in target:
            path = Path(target).resolve()
            if not path.is_file():
                raise ConfigError(f"{where}: no file {target}")
            module_spec = importlib.util.spec_from_file_location(f"source_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ConfigError:
        raise
    except Exception as exc:  # the user's module: anything can go wrong at import
        raise ConfigError(f"{where}: cannot import {target}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{where}: {target} has no callable {name!r}")
    return fn


def source_kind(spec: str) -> str:
    """The kind of source a --source names, as stores remember it: any callable is pull."""
    return spec if spec in ("random", "stdin", "http") else "pull"


def make_source(settings: Settings, async_mode: str = "threading"):
    """The source named by --source."""
    spec = settings.source
    if spec == "random":
        return RandomSource(settings.min, settings.max, settings.seed)
    if spec == "stdin":
        return StdinSource(green_read=async_mode == "eventlet")
    if spec == "http":
        return HttpSource(settings.ingest_token or "")
    return PullSource(spec, load_callable(spec))


def init_app(app, source) -> None:
    if isinstance(source, HttpSource):
        app.register_blueprint(ingest)
