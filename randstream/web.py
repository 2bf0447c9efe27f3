"""HTTP routes: the page, the JSON/CSV API, health and metrics."""

from __future__ import annotations

import gzip
import math
import time

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from . import series as ranges
from .access import STATUS_ONLY
from .headers import DASHBOARD_CSS
from .history import StoreError
from .metrics import CONTENT_TYPE

bp = Blueprint("web", __name__)

MAX_LIMIT = 10_000
CSV_CHUNK = 5_000

class BadRequest(ValueError):
    pass


def stream():
    return current_app.extensions["stream"]


def int_arg(name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 16 or not lo <= int(raw) <= hi:
        raise BadRequest(f"{name} must be a whole number from {lo} to {hi}")
    return int(raw)


def ts_arg(name: str, default: float) -> float:
    """Epoch seconds: digits, maybe a fraction (no sign, exponent, NaN or infinity)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    whole, _, fraction = raw.partition(".")
    if (not raw.isascii() or not whole.isdigit() or len(raw) > 24
            or not (fraction.isdigit() or (fraction == "" and not raw.endswith(".")))
            or float(raw) > ranges.MAX_TS):
        raise BadRequest(f"{name} must be epoch seconds from 0 to {ranges.MAX_TS:.0f}")
    return float(raw)


def ts_range(default_from: float | None) -> tuple[float, float]:
    """`from` and `to` as asked, `to` after `from`."""
    to = ts_arg("to", time.time() if default_from is not None else math.inf)
    frm = ts_arg("from", max(0.0, to - default_from) if default_from is not None else 0.0)
    if not frm < to:
        raise BadRequest("from must be before to")
    return frm, to


def foreign_stream() -> bool:
    """Whether `?stream=ID` names another stream than this one: its `after` means nothing here."""
    raw = request.args.get("stream")
    if raw is None:
        return False  # a client from before stream ids: its `after` is taken as ours
    if not 0 < len(raw) <= 64:
        raise BadRequest("stream must be a stream id (1 to 64 characters)")
    return raw != stream().history.stream_id


def check_args(allowed: set[str]) -> None:
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise BadRequest(f"unknown query parameter: {unknown[0]}")


@bp.errorhandler(BadRequest)
def bad_request(exc: BadRequest):
    return jsonify(error=str(exc)), 400


@bp.get("/")
def index():
    # The newest reading is rendered into the page: a number shows before any script runs.
    return render_template(
        "index.html", settings=stream().settings, latest=stream().history.latest_reading(),
        dashboard_css=DASHBOARD_CSS, source_uniform=stream().source.uniform,
        source_kind=stream().source.kind, stream_id=stream().history.stream_id,
    )


@bp.get("/api/latest")
def latest():
    check_args(set())
    reading = stream().history.latest_reading()
    if reading is None:
        return jsonify(error="no reading yet"), 404
    return jsonify({**reading.to_dict(), "stream": stream().info})


@bp.get("/api/history")
def history():
    check_args({"after", "limit", "stream"})
    limit = int_arg("limit", stream().settings.history, 1, MAX_LIMIT)
    after = int_arg("after", None, 0, 2**53)
    if foreign_stream():
        after = None  # another stream's seq: the newest readings, as for a new client
    h = stream().history
    readings = h.latest(limit) if after is None else h.after(after, limit)
    return jsonify(readings=[r.to_dict() for r in readings], stream=stream().info)


@bp.get("/api/series")
def series():
    check_args({"from", "to", "points"})
    frm, to = ts_range(ranges.DEFAULT_SPAN)
    points = int_arg("points", ranges.DEFAULT_POINTS, 1, ranges.MAX_POINTS)
    try:
        body = stream().history.series(frm, to, points, stream().settings.interval)
    except StoreError as exc:
        return jsonify(error=f"store: {exc}"), 503
    return jsonify(body)


@bp.get("/api/history.csv")
def history_csv():
    check_args({"after", "limit", "from", "to"})
    after = int_arg("after", 0, 0, 2**53)
    limit = int_arg("limit", stream().settings.retention, 1, stream().settings.retention)
    h = stream().history
    ranged = "from" in request.args or "to" in request.args
    frm, to = ts_range(None) if ranged else (-math.inf, math.inf)
    last = 2**63
    if ranged:  # only the seqs that can hold such readings are read
        try:
            span = h.seq_span(frm, to)
        except StoreError as exc:
            return jsonify(error=f"store: {exc}"), 503
        after, last = (after, -1) if span is None else (max(after, span[0] - 1), span[1])

    def rows():
        yield "seq,value,ts\n"
        seq, left = after, limit
        while left > 0 and seq < last:
            chunk = h.after(seq, CSV_CHUNK)
            if not chunk:
                return
            kept = [r for r in chunk if frm <= r.ts < to and r.seq <= last][:left]
            if kept:
                yield "".join(f"{r.seq},{r.value},{r.ts:.6f}\n" for r in kept)
            seq, left = chunk[-1].seq, left - len(kept)

    return Response(
        rows(),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="random_stream.csv"'},
    )


@bp.get("/api/stats")
def stats():
    check_args(set())
    return jsonify(stream().stats_json())


@bp.get("/api/viewers")
def viewers():
    check_args(set())
    presence = stream().presence
    return jsonify(count=presence.count(), processes=presence.processes)


@bp.get("/healthz")
def healthz():
    s, now = stream(), time.time()
    problems = s.problems(now)
    body = {
        "status": "ok" if not problems else "unhealthy",
        "last_seq": s.history.last_seq,
        "last_tick_age": s.tick_age(now),
        "clients": s.live.clients,
        "sse_clients": s.feed.clients,
        "source": s.source.health(),
        "problems": problems,
    }
    if request.environ.get(STATUS_ONLY):  # a private dashboard's, asked without a credential
        body = {"status": body["status"]}
    return jsonify(body), 200 if not problems else 503


@bp.get("/metrics")
def metrics():
    return Response(stream().metrics.exposition(), content_type=CONTENT_TYPE)


def api_error(exc: Exception):
    """JSON errors under /api (and health/metrics); plain text elsewhere; never a traceback."""
    if isinstance(exc, HTTPException):
        code, message = exc.code or 500, exc.description
    else:
        current_app.logger.error("request failed: %s %s", request.method, request.path, exc_info=exc)
        code, message = 500, "internal server error"
    if request.path.startswith(("/api/", "/healthz", "/metrics")):
        return jsonify(error=message), code
    return Response(f"{code}: {message}\n", status=code, mimetype="text/plain")


COMPRESSIBLE = {"text/html", "text/css", "text/javascript", "application/javascript",
                "image/svg+xml", "application/json"}
_gzipped: dict[tuple[str, str], bytes] = {}  # static files, compressed once per version


def compress(response: Response) -> Response:
    """gzip text the browser accepts gzip for: the page's assets shrink about four times."""
    response.vary.add("Accept-Encoding")
    if (response.status_code != 200 or response.is_streamed and not response.direct_passthrough
            or response.mimetype not in COMPRESSIBLE or "Content-Encoding" in response.headers
            or request.accept_encodings["gzip"] <= 0):  # absent, or refused with q=0
        return response
    etag, _ = response.get_etag()
    key = (request.path, etag) if etag and request.path.startswith("/static/") else None
    body = _gzipped.get(key) if key else None
    if body is None:
        response.direct_passthrough = False
        data = response.get_data()
        if len(data) < 512:
            return response
        body = gzip.compress(data, 6)
        if key and len(_gzipped) < 256:
            _gzipped[key] = body
    response.direct_passthrough = False
    response.set_data(body)
    response.headers["Content-Encoding"] = "gzip"
    if etag:
        response.set_etag(etag, weak=True)  # as nginx does: same content, other bytes
    return response


def init_app(app) -> None:
    app.register_blueprint(bp)
    app.after_request(compress)
    app.register_error_handler(HTTPException, api_error)
    app.register_error_handler(Exception, api_error)
