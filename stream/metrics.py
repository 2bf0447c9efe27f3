"""Prometheus metrics, read from the stream's own counters at scrape time (nothing per tick)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, stream) -> None:
        self.registry = CollectorRegistry()
        self.broadcast_seconds = Histogram(
            "random_stream_broadcast_seconds", "Time to hand one reading to every client",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.registry.register(_StreamCollector(stream))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StreamCollector:
    def __init__(self, stream) -> None:
        self.stream = stream

    def collect(self):
        s = self.stream
        yield CounterMetricFamily("random_stream_ticks", "Readings drawn", value=s.ticker.ticks)
        yield CounterMetricFamily(
            "random_stream_tick_failures", "Ticks that raised", value=s.ticker.failures
        )
        yield GaugeMetricFamily(
            "random_stream_tick_lag_seconds", "How late the last tick woke", value=s.ticker.tick_lag
        )
        yield GaugeMetricFamily("random_stream_last_seq", "Newest seq", value=s.history.last_seq)
        yield GaugeMetricFamily(
            "random_stream_connected_clients", "Socket.IO clients connected", value=s.live.clients
        )
        yield CounterMetricFamily("random_stream_connects", "Client connects", value=s.live.connects)
        yield CounterMetricFamily(
            "random_stream_disconnects", "Client disconnects", value=s.live.disconnects
        )
        yield CounterMetricFamily("random_stream_resumes", "Resume requests served", value=s.live.resumes)
        rejected = CounterMetricFamily(
            "random_stream_rejected_inputs", "Client input refused", labels=["reason"]
        )
        counts = dict(s.live.rejected)
        for reason, count in s.guard.rejected.items():
            counts[reason] = counts.get(reason, 0) + count
        for reason, count in sorted(counts.items()):
            rejected.add_metric([reason], count)
        yield rejected
        refused = CounterMetricFamily(
            "random_stream_refused_connections",
            "Connections refused or closed by the server, by reason", labels=["reason"],
        )
        for reason, count in sorted(s.guard.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        yield GaugeMetricFamily(
            "random_stream_open_connections",
            "Engine.IO connections open, joined or not (the cap applies to these)",
            value=s.guard.open_connections,
        )
        yield GaugeMetricFamily(
            "random_stream_max_connections", "The --max-connections cap",
            value=s.guard.max_connections,
        )
        sends = CounterMetricFamily(
            "random_stream_broadcast_sends", "Readings handed to clients, by path", labels=["path"]
        )
        manager = s.socketio.server.manager
        sends.add_metric(["direct"], getattr(manager, "fast_sends", 0))
        sends.add_metric(["queued"], getattr(manager, "slow_sends", 0))
        yield sends
        yield CounterMetricFamily(
            "random_stream_laggards_dropped", "Clients cut off for being too far behind",
            value=getattr(manager, "laggards_dropped", 0),
        )
        yield CounterMetricFamily(
            "random_stream_store_errors", "Store operations that failed (writes; with Redis also lease claims and catch-up reads)", value=s.history.store_errors
        )
        yield from _source_metrics(s)


def _source_metrics(s):
    """The source's problems by kind, skipped pull ticks, and the SSE clients."""
    problems = CounterMetricFamily(
        "random_stream_source_errors", "Source values refused or calls that failed, by kind",
        labels=["kind"],
    )
    source_problems = getattr(s.source, "problems", None)
    for kind, count in sorted((source_problems.counts if source_problems else {}).items()):
        problems.add_metric([kind], count)
    yield problems
    yield CounterMetricFamily(
        "random_stream_source_skipped_ticks", "Ticks skipped: the pull call was still running",
        value=getattr(s.source, "skipped", 0),
    )
    yield GaugeMetricFamily(
        "random_stream_sse_clients", "GET /api/stream responses open", value=s.feed.clients
    )
    yield CounterMetricFamily(
        "random_stream_sse_dropped", "SSE clients cut off for being too far behind",
        value=s.feed.dropped,
    )
