"""Prometheus metrics, read from the stream's own counters at scrape time (nothing per tick).

The text exposition format (version 0.0.4) is written here, a few lines, rather than
through prometheus-client: /metrics then works with the three runtime packages alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .transport import Sends

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

BROADCAST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

T = TypeVar("T")


class Histogram:
    """Observations counted into cumulative buckets, as Prometheus histograms are."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.bounds = tuple(sorted(buckets)) + (math.inf,)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break

    def time(self) -> _Timer:
        return _Timer(self)

    def timing(self, fn: Callable[[T], object]) -> Callable[[T], None]:
        """`fn`, each call of it observed (a fan-out subscriber: the Socket.IO broadcast)."""
        def timed(arg: T) -> None:
            with self.time():
                fn(arg)

        return timed


class _Timer:
    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram

    def __enter__(self) -> _Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.histogram.observe(time.perf_counter() - self.start)


class Metrics:
    """/metrics from the parts named here, each read at scrape time.

    `counters` (counters.py) has `rejected` and `refused` (dicts of counts by reason),
    `open_connections` and `max_connections`; `sends()` is the transport's (Transport.sends);
    `presence` (presence.py) has `here()`, `count()`, `processes` and `broadcasts`.
    """

    def __init__(self, *, ticker, history, live, feed, source, counters,
                 sends: Callable[[], Sends], broadcast_seconds: Histogram, presence) -> None:
        self.ticker = ticker
        self.history = history
        self.live = live
        self.feed = feed
        self.source = source
        self.counters = counters
        self.sends = sends
        self.broadcast_seconds = broadcast_seconds
        self.presence = presence

    def exposition(self) -> bytes:
        return "".join(_lines(self)).encode()


def _number(value: float) -> str:
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, doc: str, samples: Iterable[tuple[str, dict, float]]) -> Iterator[str]:
    yield f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"
    for sample, labels, value in samples:
        if labels:
            label_text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            sample = f"{sample}{{{label_text}}}"
        yield f"{sample} {_number(value)}\n"


def _counter(name: str, doc: str, value: float) -> Iterator[str]:
    return _family(name + "_total", "counter", doc, [(name + "_total", {}, value)])


def _gauge(name: str, doc: str, value: float) -> Iterator[str]:
    return _family(name, "gauge", doc, [(name, {}, value)])


def _labelled(name: str, doc: str, label: str, counts: dict) -> Iterator[str]:
    return _family(name + "_total", "counter", doc,
                   [(name + "_total", {label: key}, count) for key, count in sorted(counts.items())])


def _histogram(name: str, doc: str, h: Histogram) -> Iterator[str]:
    samples, running = [], 0
    for bound, count in zip(h.bounds, h.counts):
        running += count
        samples.append((name + "_bucket", {"le": _number(bound)}, running))
    samples += [(name + "_count", {}, running), (name + "_sum", {}, h.sum)]
    return _family(name, "histogram", doc, samples)


def _lines(s: Metrics) -> Iterator[str]:
    yield from _counter("random_stream_ticks", "Readings drawn", s.ticker.ticks)
    yield from _counter("random_stream_tick_failures", "Ticks that raised", s.ticker.failures)
    yield from _gauge("random_stream_tick_lag_seconds", "How late the last tick woke", s.ticker.tick_lag)
    yield from _histogram("random_stream_broadcast_seconds", "Time to hand one reading to every client",
                          s.broadcast_seconds)
    yield from _gauge("random_stream_last_seq", "Newest seq", s.history.last_seq)
    yield from _gauge("random_stream_connected_clients", "Socket.IO clients connected", s.live.clients)
    yield from _counter("random_stream_connects", "Client connects", s.live.connects)
    yield from _counter("random_stream_disconnects", "Client disconnects", s.live.disconnects)
    yield from _counter("random_stream_resumes", "Resume requests served", s.live.resumes)
    rejected = dict(s.live.rejected)
    for reason, count in s.counters.rejected.items():
        rejected[reason] = rejected.get(reason, 0) + count
    yield from _labelled("random_stream_rejected_inputs", "Client input refused", "reason", rejected)
    yield from _labelled("random_stream_refused_connections",
                         "Connections refused or closed by the server, by reason", "reason",
                         dict(s.counters.refused))
    yield from _gauge("random_stream_open_connections",
                      "Engine.IO connections open, joined or not (the cap applies to these)",
                      s.counters.open_connections)
    yield from _gauge("random_stream_max_connections", "The --max-connections cap",
                      s.counters.max_connections)
    sends = s.sends()
    yield from _labelled("random_stream_broadcast_sends", "Readings handed to clients, by path", "path",
                         {"direct": sends.direct, "queued": sends.queued})
    yield from _counter("random_stream_laggards_dropped", "Clients cut off for being too far behind",
                        sends.laggards_dropped)
    yield from _counter(
        "random_stream_store_errors",
        "Store operations that failed (writes; with Redis also lease claims and catch-up reads)",
        s.history.store_errors,
    )
    yield from _source_lines(s)
    yield from _presence_lines(s)


def _presence_lines(s: Metrics) -> Iterator[str]:
    """Viewers: this process's (they add up across processes), and the stream's total."""
    p = s.presence
    yield from _gauge("random_stream_viewers",
                      "Viewers connected to this process: Socket.IO clients and SSE readers",
                      p.here())
    yield from _gauge("random_stream_cluster_viewers",
                      "Viewers of the stream in every process, as this process last learnt "
                      "(what the viewers event says)", p.count())
    yield from _gauge("random_stream_cluster_processes",
                      "Processes counted in random_stream_cluster_viewers", p.processes)
    yield from _counter("random_stream_viewers_broadcasts", "viewers events broadcast",
                        p.broadcasts)


def _source_lines(s: Metrics) -> Iterator[str]:
    """The source's problems by kind, skipped pull ticks, and the SSE clients."""
    problems = getattr(s.source, "problems", None)
    yield from _labelled("random_stream_source_errors",
                         "Source values refused or calls that failed, by kind", "kind",
                         dict(problems.counts) if problems else {})
    yield from _counter("random_stream_source_skipped_ticks",
                        "Ticks skipped: the pull call was still running",
                        getattr(s.source, "skipped", 0))
    yield from _gauge("random_stream_sse_clients", "GET /api/stream responses open", s.feed.clients)
    yield from _counter("random_stream_sse_dropped", "SSE clients cut off for being too far behind",
                        s.feed.dropped)
