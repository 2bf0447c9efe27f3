"""/metrics on a real server, read with the Prometheus client's own parser."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rawsocket import Polling, RawSocket, http

EXPECTED = {
    "random_stream_ticks": "counter",
    "random_stream_tick_failures": "counter",
    "random_stream_tick_lag_seconds": "gauge",
    "random_stream_broadcast_seconds": "histogram",
    "random_stream_last_seq": "gauge",
    "random_stream_connected_clients": "gauge",
    "random_stream_connects": "counter",
    "random_stream_disconnects": "counter",
    "random_stream_resumes": "counter",
    "random_stream_rejected_inputs": "counter",
    "random_stream_store_errors": "counter",
    "random_stream_refused_connections": "counter",
    "random_stream_open_connections": "gauge",
    "random_stream_max_connections": "gauge",
}


class Scrape:
    """One scrape, parsed: families by name and sample values by (name, labels)."""

    def __init__(self, url: str) -> None:
        status, headers, body = http("GET", url + "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        self.families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        self.samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in self.families.values() for s in f.samples
        }

    def value(self, name: str, **labels) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def server(server_factory):
    return server_factory("--interval", "0.1", "--max-connections", "50")


def test_every_metric_is_exposed_with_its_type(server):
    scrape = Scrape(server.url)
    for name, kind in EXPECTED.items():
        assert name in scrape.families, name
        assert scrape.families[name].type == kind, name
    assert scrape.value("random_stream_max_connections") == 50
    assert scrape.value("random_stream_store_errors_total") == 0
    assert scrape.value("random_stream_tick_lag_seconds") >= 0


def test_ticks_and_broadcasts_are_counted(server):
    first = Scrape(server.url)
    time.sleep(0.5)
    second = Scrape(server.url)
    ticks = second.value("random_stream_ticks_total")
    assert ticks > first.value("random_stream_ticks_total")
    assert ticks == second.value("random_stream_last_seq"), "a fresh stream: one tick per seq"
    broadcasts = second.value("random_stream_broadcast_seconds_count")
    assert ticks - 1 <= broadcasts <= ticks
    assert second.value("random_stream_broadcast_seconds_bucket", le="+Inf") == broadcasts
    assert second.value("random_stream_tick_failures_total") == 0


def test_clients_resumes_and_refusals_are_counted(server):
    stays = RawSocket(server.url)
    stays.join()
    leaves = RawSocket(server.url)
    leaves.join()
    leaves.close()
    stays.send('42["resume",{"after":1}]')
    stays.wait_event("history")
    stays.send('42["resume",{"after":"one"}]')
    stays.wait_event("error")
    stays.send('42["no_such_event"]')
    assert Polling(server.url, origin="http://evil.example").status == 403
    bad = RawSocket(server.url)
    bad.join()
    bad.send("xyz")
    assert bad.wait_closed()

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        scrape = Scrape(server.url)
        if scrape.value("random_stream_disconnects_total") == 2:
            break
        time.sleep(0.1)
    assert scrape.value("random_stream_connected_clients") == 1
    assert scrape.value("random_stream_connects_total") == 3
    assert scrape.value("random_stream_disconnects_total") == 2
    assert scrape.value("random_stream_resumes_total") == 1
    assert scrape.value("random_stream_rejected_inputs_total", reason="resume") == 1
    assert scrape.value("random_stream_rejected_inputs_total", reason="unknown_event") == 1
    assert scrape.value("random_stream_rejected_inputs_total", reason="bad_packet") == 1
    assert scrape.value("random_stream_refused_connections_total", reason="origin") == 1
    assert scrape.value("random_stream_open_connections") == 1
    stays.close()
