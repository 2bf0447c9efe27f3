"""WebSocket clients without a writer task (stream/direct.py): written through, in order.

The direct path is taken only if engine.io still calls the `connect` handler before its
first write and still looks up `_websocket_handler` on the socket; if an upgrade moves
either, test_fanout.test_broadcasts_take_the_direct_path fails, and these check that what
the queue does instead of the writer task (back-pressure, order, closing) still holds.
"""

import json
import re
import time

import websocket
from test_fanout import metric, raw_client

READING = re.compile(r'42\["random_number",\{"seq":(\d+),')


def test_a_client_that_reads_late_gets_every_frame_whole_and_in_order(server_factory):
    server = server_factory("--interval", "0.01", "--history", "5000")
    time.sleep(2)  # a couple of hundred readings: each answer below is ~10 KB
    slow = raw_client(server.url, rcvbuf=4096)
    for _ in range(25):  # within the guard's burst; together more than the kernel buffers hold
        slow.send('42["resume",{"after":0}]')
    time.sleep(1.5)  # readings pile up behind the answers, in this client's queue
    assert metric(server, 'random_stream_broadcast_sends_total{path="queued"}') > 0
    answers, live = [], []
    while len(live) < 300:
        message = slow.recv()
        if message == "2":
            slow.send("3")
        elif message.startswith('42["history"'):
            answers.append(json.loads(message[2:])[1]["readings"])
        elif match := READING.match(message):
            live.append(int(match[1]))
    assert len(answers) == 26 and all(len(a) > 100 for a in answers[1:]), "the snapshot, then 25"
    assert live == list(range(live[0], live[0] + len(live))), "no gap, no reordering"
    # Once drained, the client is written through again.
    direct = metric(server, 'random_stream_broadcast_sends_total{path="direct"}')
    time.sleep(0.5)
    assert metric(server, 'random_stream_broadcast_sends_total{path="direct"}') > direct
    slow.close()


def test_websocket_pings_from_a_client_are_answered_between_readings(server_factory):
    server = server_factory("--interval", "0.02")
    ws = raw_client(server.url)
    ws.settimeout(5)
    for n in range(20):
        ws.ping(f"p{n}")
        pong = None
        while pong is None:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_PONG:
                pong = data
            else:
                assert opcode == websocket.ABNF.OPCODE_TEXT, "frames stay whole"
        assert pong == f"p{n}".encode()
    ws.close()


def test_a_client_that_leaves_is_forgotten_and_others_go_on(server_factory):
    server = server_factory("--interval", "0.05")
    staying, leaving = raw_client(server.url), raw_client(server.url)
    assert metric(server, "random_stream_connected_clients") == 2
    leaving.close()
    deadline = time.monotonic() + 10
    while metric(server, "random_stream_connected_clients") > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(server, "random_stream_connected_clients") == 1
    seen = []
    while len(seen) < 10:
        if match := READING.match(staying.recv()):
            seen.append(int(match[1]))
    assert seen == list(range(seen[0], seen[0] + 10))
    assert "Traceback" not in server.log()
    staying.close()
