"""The fan-out (randstream/fanout.py): kept first, then every subscriber, once, in seq order;
and the fast broadcast it ends in: one frame for everyone, written directly; stuck clients
hurt no one.

The fast-broadcast tests also guard the two extension points randstream/transport/engineio.py
relies on: if an upgrade of python-socketio or python-engineio moves them, the direct path
stops being used and test_broadcasts_take_the_direct_path fails.
"""

import re
import socket
import threading
import time

import pytest
import websocket
from conftest import DIRECT_RUNTIMES, fill_database, in_async_mode

from randstream.fanout import Fanout, Keep
from randstream.history import History, Reading
from randstream.stats import Stats
from randstream.store import SqliteStore
from randstream.transport.engineio import MAX_BACKLOG, websocket_frame

fast_path = pytest.mark.fast_path


# --- the fan-out ---------------------------------------------------------------------------------


def reading(seq: int) -> Reading:
    return Reading(seq, seq % 101, 1000.0 + seq)


@pytest.fixture
def kept():
    """A history on SQLite, its stats, and the fan-out's keeper of both."""
    history = History(SqliteStore(":memory:", retention=100), ring_size=10)
    stats = Stats(0, 100)
    return history, stats, Keep(history, stats)


def test_a_reading_is_stored_before_any_subscriber_sees_it_then_each_in_order(kept):
    history, stats, keep = kept
    seen = []

    def first(r):
        # stored, with the stats that include it, before the first subscriber
        assert history.store.latest(1) == [r] and history.store.stats_state() == stats.state()
        assert stats.count == r.seq
        seen.append(("first", r.seq))

    fanout = Fanout(keep, [first, lambda r: seen.append(("second", r.seq))])
    assert fanout.publish(reading(1)) and fanout.publish(reading(2))
    assert seen == [("first", 1), ("second", 1), ("first", 2), ("second", 2)]
    assert fanout.last_seq == 2 and history.last_seq == 2


def test_a_seq_handed_out_already_or_older_is_kept_if_missing_but_not_handed_out(kept):
    history, _, keep = kept
    seen = []
    fanout = Fanout(keep, [lambda r: seen.append(r.seq)], last_seq=3)  # 1..3 went out before
    assert not fanout.publish(reading(2))  # late
    assert history.last_seq == 2  # the keeper still had it to keep
    assert not fanout.publish(reading(3)) and not fanout.publish(reading(3))  # heard again
    assert fanout.publish(reading(4)) and not fanout.publish(reading(4))
    assert seen == [4] and fanout.repeats == 4
    assert [r.seq for r in history.latest(10)] == [2, 3, 4]  # each kept once


def test_a_keeper_that_raises_hands_out_nothing(kept):
    history, _, keep = kept
    seen, refuse = [], [True]

    def fenced(r):
        if refuse[0]:
            raise RuntimeError("not the lease holder")
        keep(r)

    fanout = Fanout(fenced, [lambda r: seen.append(r.seq)])
    with pytest.raises(RuntimeError):
        fanout.publish(reading(1))
    assert seen == [] and fanout.last_seq == 0 and history.last_seq == 0
    refuse[0] = False
    assert fanout.publish(reading(1)) and seen == [1]


def test_a_subscriber_that_raises_ends_that_readings_walk_and_only_that(kept):
    _, _, keep = kept
    seen = []

    def flaky(r):
        if r.seq == 2:
            raise RuntimeError("the broadcast blew up")
        seen.append(("flaky", r.seq))

    fanout = Fanout(keep, [flaky, lambda r: seen.append(("after", r.seq))])
    fanout.publish(reading(1))
    with pytest.raises(RuntimeError):
        fanout.publish(reading(2))
    assert not fanout.publish(reading(2))  # handed out once: the caller logged it; no retry
    fanout.publish(reading(3))
    assert seen == [("flaky", 1), ("after", 1), ("flaky", 3), ("after", 3)]


def test_two_tasks_publishing_at_once_hand_out_each_seq_once_in_order(kept):
    """The lease holder's ticker and its subscription both publish its readings."""
    _, _, keep = kept
    seen = []

    def slow(r):
        time.sleep(0.0005)  # a broadcast takes time: the other task's next seq must wait
        seen.append(r.seq)

    fanout = Fanout(keep, [slow])
    start = threading.Barrier(2)

    def publish_all():
        start.wait()
        for seq in range(1, 201):
            fanout.publish(reading(seq))

    tasks = [threading.Thread(target=publish_all) for _ in range(2)]
    for task in tasks:
        task.start()
    for task in tasks:
        task.join(30)
    assert seen == list(range(1, 201)) and fanout.repeats == 200


# --- the fast broadcast ----------------------------------------------------------------------------


@pytest.fixture(params=DIRECT_RUNTIMES)
def server_factory(server_factory, request):
    """Every server here under each runtime with a direct path (randstream/transport)."""
    return in_async_mode(server_factory, request.param)


@fast_path
@pytest.mark.parametrize("size, header", [
    (0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
    (65535, b"\x81\x7e\xff\xff"), (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
])
def test_websocket_frame_headers(size, header):
    frame = websocket_frame("x" * size)
    assert frame == header + b"x" * size


@fast_path
def test_websocket_frame_counts_bytes_not_characters():
    assert websocket_frame("é") == b"\x81\x02" + "é".encode()


def raw_client(url, rcvbuf=None):
    """A raw Engine.IO/Socket.IO client that has joined the default namespace."""
    sockopt = [(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)] if rcvbuf else []
    ws = websocket.create_connection(
        url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket", timeout=10,
        sockopt=sockopt,
    )
    assert ws.recv().startswith("0{")
    ws.send("40")
    assert ws.recv().startswith("40{")
    return ws


def readings(ws, n):
    seen = []
    while len(seen) < n:
        message = ws.recv()
        match = re.fullmatch(r'42\["random_number",\{"seq":(\d+),"value":(\d+),"ts":[\d.]+\}\]', message)
        if match:
            seen.append(int(match[1]))
        elif message == "2":
            ws.send("3")
    return seen


def metric(server, name):
    _, text = server.get("/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@fast_path
def test_broadcasts_take_the_direct_path(server_factory):
    server = server_factory("--interval", "0.05")
    clients = [raw_client(server.url) for _ in range(3)]
    seqs = [readings(ws, 20) for ws in clients]
    for s in seqs:
        assert s == list(range(s[0], s[0] + 20)), "frames arrive whole and in order"
    assert metric(server, 'random_stream_broadcast_sends_total{path="direct"}') >= 50
    for ws in clients:
        ws.close()


@fast_path
def test_a_stuck_client_does_not_hold_up_the_others(server_factory, tmp_path):
    # 2,000 readings stored: the answer below (~90 KB) fills the kernel's buffers at once.
    # (From a few dozen readings it took ~1,400 ticks, 14 s, of live frames to fill them.)
    db = fill_database(tmp_path / "readings.sqlite3", 2000)
    server = server_factory("--interval", "0.01", "--history", "5000", db=str(db))
    stuck = raw_client(server.url, rcvbuf=4096)
    stuck.send('42["resume",{"after":0}]')  # asks for a big answer, then never reads again
    healthy = raw_client(server.url)
    start = time.monotonic()
    seen = readings(healthy, MAX_BACKLOG + 200)
    assert seen == list(range(seen[0], seen[0] + len(seen)))
    # The stuck client's queue is bounded: past MAX_BACKLOG it is cut off.
    deadline = time.monotonic() + 30
    while metric(server, "random_stream_connected_clients") > 1 and time.monotonic() < deadline:
        readings(healthy, 10)
    assert metric(server, "random_stream_connected_clients") == 1
    assert metric(server, "random_stream_laggards_dropped_total") == 1
    assert "packets behind" in server.log()
    assert time.monotonic() - start < 60
    stuck.close()
    healthy.close()


@fast_path
def test_one_shared_task_pings_every_client_and_drops_the_silent(server_factory):
    server = server_factory("--interval", "0.5", "--ping-interval", "1", "--ping-timeout", "1")
    answering, silent = raw_client(server.url), raw_client(server.url)
    pings = 0
    deadline = time.monotonic() + 20
    while pings < 3 and time.monotonic() < deadline:
        if answering.recv() == "2":
            pings += 1
            answering.send("3")
    assert pings == 3, "pings arrive about every --ping-interval"
    # The client that never answers is dropped after interval + timeout.
    while metric(server, "random_stream_connected_clients") > 1 and time.monotonic() < deadline:
        readings(answering, 1)
    assert metric(server, "random_stream_connected_clients") == 1
    assert readings(answering, 3), "the answering client stays"
    silent.close()
    answering.close()


@fast_path
def test_resume_requests_from_a_client_that_does_not_read_are_refused(server_factory, tmp_path):
    # A hundred readings stored (not 5 s of ticks): thirty answers are more than the socket
    # buffers hold.
    db = fill_database(tmp_path / "readings.sqlite3", 100)
    server = server_factory("--interval", "0.05", "--history", "5000", db=str(db))
    greedy = raw_client(server.url, rcvbuf=4096)
    for _ in range(30):  # the rate limit's burst: all pass the rate limit at once
        greedy.send('42["resume",{"after":0}]')
    time.sleep(4)
    for _ in range(20):  # the allowance refilled at 10/s meanwhile
        greedy.send('42["resume",{"after":0}]')
    deadline = time.monotonic() + 20
    refused = 0
    while refused == 0 and time.monotonic() < deadline:
        _, text = server.get("/metrics")
        refused = sum(float(line.split()[-1]) for line in text.splitlines()
                      if line.startswith('random_stream_rejected_inputs_total{reason="resume"}'))
        time.sleep(0.2)
    assert refused >= 1, "answers pile up no further than a few packets"
    _, resumes = server.get("/metrics")
    served = [float(line.split()[-1]) for line in resumes.splitlines()
              if line.startswith("random_stream_resumes_total ")]
    assert served and served[0] <= 40
    greedy.close()
