"""The fast broadcast: one frame for everyone, written directly; stuck clients hurt no one.

These tests also guard the two extension points randstream/transport/engineio.py relies on: if an upgrade
of python-socketio or python-engineio moves them, the direct path stops being used and
test_broadcasts_take_the_direct_path fails.
"""

import re
import socket
import time

import pytest
import websocket
from conftest import DIRECT_RUNTIMES, fill_database, in_async_mode

from randstream.transport.engineio import MAX_BACKLOG, websocket_frame

pytestmark = pytest.mark.fast_path


@pytest.fixture(params=DIRECT_RUNTIMES)
def server_factory(server_factory, request):
    """Every server here under each runtime with a direct path (randstream/transport)."""
    return in_async_mode(server_factory, request.param)


@pytest.mark.parametrize("size, header", [
    (0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
    (65535, b"\x81\x7e\xff\xff"), (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
])
def test_websocket_frame_headers(size, header):
    frame = websocket_frame("x" * size)
    assert frame == header + b"x" * size


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


def test_broadcasts_take_the_direct_path(server_factory):
    server = server_factory("--interval", "0.05")
    clients = [raw_client(server.url) for _ in range(3)]
    seqs = [readings(ws, 20) for ws in clients]
    for s in seqs:
        assert s == list(range(s[0], s[0] + 20)), "frames arrive whole and in order"
    assert metric(server, 'random_stream_broadcast_sends_total{path="direct"}') >= 50
    for ws in clients:
        ws.close()


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


def test_resume_requests_from_a_client_that_does_not_read_are_refused(server_factory, tmp_path):
    # A hundred readings stored (not 5 s of ticks): thirty answers are more than the socket
    # buffers hold.
    db = fill_database(tmp_path / "readings.sqlite3", 100)
    server = server_factory("--interval", "0.05", "--history", "5000", db=str(db))
    greedy = raw_client(server.url, rcvbuf=4096)
    for _ in range(30):  # the guard's burst: all pass the rate limit at once
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
