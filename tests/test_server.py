"""A real server process and real Socket.IO clients over the wire."""

import signal
import socket
import sqlite3
import time

import pytest
from conftest import http_get


def seqs(readings):
    return [r["seq"] for r in readings]


def test_history_then_a_reading_every_interval(server_factory, viewers):
    server = server_factory("--interval", "0.1")
    time.sleep(0.5)
    viewer = viewers(server.url)
    viewer.wait_for(lambda: len(viewer.numbers) >= 10)
    (history,) = viewer.histories
    assert history["stream"] == {"id": server.get("/api/latest")[1]["stream"]["id"],
                                 "min": 0, "max": 100, "interval": 0.1}
    assert history["readings"], "history is sent on connect"
    # Live readings continue the history with consecutive seqs and in-range values.
    numbers = viewer.numbers[:10]
    assert seqs(numbers) == list(range(numbers[0]["seq"], numbers[0]["seq"] + 10))
    assert numbers[0]["seq"] <= history["readings"][-1]["seq"] + 1
    assert all(0 <= r["value"] <= 100 and isinstance(r["value"], int) for r in numbers)
    assert all(b["ts"] > a["ts"] for a, b in zip(numbers, numbers[1:]))


def test_everyone_sees_the_same_stream(server_factory, viewers):
    server = server_factory("--interval", "0.1")
    a, b = viewers(server.url), viewers(server.url)
    a.wait_for(lambda: len(a.numbers) >= 6)
    b.wait_for(lambda: len(b.numbers) >= 6)
    common = set(seqs(a.numbers)) & set(seqs(b.numbers))
    assert len(common) >= 4
    by_seq = {r["seq"]: r for r in b.numbers}
    assert all(by_seq[r["seq"]] == r for r in a.numbers if r["seq"] in common)


def test_range_and_seed_flags(server_factory, viewers):
    server = server_factory("--interval", "0.05", "--min", "5", "--max", "7", "--seed", "3")
    viewer = viewers(server.url)
    viewer.wait_for(lambda: len(viewer.numbers) >= 20)
    assert {r["value"] for r in viewer.numbers} <= {5, 6, 7}
    status, stats = server.get("/api/stats")
    assert stats["range"] == {"min": 5, "max": 7} and len(stats["histogram"]) == 3


def test_resume_fills_the_gap_after_a_reconnect(server_factory, viewers):
    server = server_factory("--interval", "0.1")
    first = viewers(server.url)
    first.wait_for(lambda: len(first.numbers) >= 3)
    last_seen = first.numbers[-1]["seq"]
    first.close()
    time.sleep(1.0)  # about ten readings happen while nobody watches
    again = viewers(server.url)
    again.client.emit("resume", {"after": last_seen})
    again.wait_for(lambda: len(again.histories) >= 2 and again.numbers)
    resumed = again.histories[1]["readings"]
    assert resumed[0]["seq"] == last_seen + 1
    assert seqs(resumed) == list(range(last_seen + 1, last_seen + 1 + len(resumed)))
    assert len(resumed) >= 8
    # Together with the live readings there is no hole.
    newest = resumed[-1]["seq"]
    live = [s for s in seqs(again.numbers) if s > newest]
    assert not live or live[0] == newest + 1


def test_malformed_resume_gets_an_error_and_the_stream_goes_on(server_factory, viewers):
    server = server_factory("--interval", "0.1")
    viewer = viewers(server.url)
    viewer.client.emit("resume", {"after": "yesterday"})
    viewer.wait_for(lambda: viewer.errors)
    assert "resume" in viewer.errors[0]["message"]
    count = len(viewer.numbers)
    viewer.wait_for(lambda: len(viewer.numbers) >= count + 3)
    assert viewer.client.connected


def test_a_restart_continues_seq_and_keeps_history(server_factory, viewers, tmp_path):
    db = str(tmp_path / "stream.sqlite3")
    server = server_factory("--interval", "0.1", db=db)
    viewer = viewers(server.url)
    viewer.wait_for(lambda: len(viewer.numbers) >= 5)
    viewer.close()
    assert server.stop() == 0
    last = last_stored_seq(server.db)
    assert last >= viewer.numbers[-1]["seq"]
    server.start()
    status, latest = server.get("/api/latest")
    assert status == 200 and latest["seq"] >= last
    assert latest["stream"]["id"] == viewer.histories[0]["stream"]["id"], "the same stream"
    again = viewers(server.url)
    again.wait_for(lambda: again.numbers)
    history = seqs(again.histories[0]["readings"])
    assert history == list(range(history[0], history[-1] + 1)), "no seq reused or skipped"
    assert again.numbers[0]["seq"] > last
    _, stats = server.get("/api/stats")
    assert stats["since_seq"] == 1 and stats["count"] > last, "stats carry over the restart"


def last_stored_seq(db_path):
    """The newest seq in the SQLite file a stopped server left behind."""
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT MAX(seq) FROM readings").fetchone()[0]


def test_sigterm_stops_cleanly_with_clients_connected(server_factory, viewers):
    server = server_factory("--interval", "0.2")
    viewer = viewers(server.url)
    viewer.wait_for(lambda: viewer.numbers)
    assert server.stop() == 0
    log = server.log()
    assert "stopping: 1 client(s) connected" in log and "stopped" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("mode", ["gevent", "threading"])
def test_other_async_modes_serve_the_same_stream(server_factory, viewers, mode):
    server = server_factory("--interval", "0.2", "--async-mode", mode)
    viewer = viewers(server.url)
    viewer.wait_for(lambda: len(viewer.numbers) >= 3)
    assert viewer.histories and seqs(viewer.numbers) == list(
        range(viewer.numbers[0]["seq"], viewer.numbers[0]["seq"] + len(viewer.numbers)))
    assert f"async mode {mode}" in server.log()
    assert server.stop() == 0


def test_logs_are_quiet(server_factory, viewers):
    server = server_factory("--interval", "0.05")
    viewer = viewers(server.url)
    viewer.wait_for(lambda: len(viewer.numbers) >= 20)
    for _ in range(5):
        http_get(server.url + "/api/latest")
    viewer.close()
    server.stop()
    lines = server.log().strip().splitlines()
    # start, ticker started, stopping, ticker stopped, stopped: nothing per reading or request
    assert len(lines) <= 6, lines


def test_full_collections_wait_for_the_moment_after_a_broadcast():
    import gc
    import weakref

    from randstream.server import FullCollections

    class Node:
        pass

    before = gc.get_threshold()
    try:
        collections = FullCollections()  # built by create_app: idle until serve() starts it
        collections.after_broadcast()
        assert gc.get_threshold() == before and collections.last is None
        collections.start()
        assert gc.get_threshold()[2] >= 1_000_000, "no automatic full collection"
        assert gc.get_freeze_count() > 0, "start-up objects are frozen"
        cycle = Node()
        cycle.me = cycle  # garbage that only a full collection frees
        alive = weakref.ref(cycle)
        gc.collect(1)  # into the oldest generation, as a long-lived connection would be
        del cycle
        collections.after_broadcast()
        assert alive() is not None, "not due yet: nothing collected"
        collections.last -= FullCollections.EVERY
        collections.after_broadcast()
        assert alive() is None, "a due full collection runs right after the broadcast"
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_stopping_server_refuses_new_connections_and_frees_its_port(server_factory):
    """Clients told to go at the stop come straight back: they are refused (and retry against
    the next server), not queued in the backlog of a server that will not serve them, and
    the next server can take the port while this one finishes."""
    server = server_factory("--interval", "0.2")
    half_sent = socket.create_connection(("127.0.0.1", server.port))
    half_sent.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the stop waits for it
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while "stopping:" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        refused = False
    except ConnectionRefusedError:
        refused = True
    following = server_factory("--interval", "0.2", launch=False)
    following.port = server.port
    still_stopping = server.proc.poll() is None
    following.start()
    assert still_stopping, "the old server was still finishing (the half-sent request)"
    assert refused, "a connection to the stopping server is refused"
    assert following.get("/healthz")[0] == 200
    half_sent.close()
    assert server.proc.wait(15) == 0
    assert following.stop() == 0
