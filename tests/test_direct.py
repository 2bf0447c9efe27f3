"""WebSocket clients without a writer task (randstream/transport/websocket.py, under eventlet and
gevent): written through, in order.

The direct path is taken only if engine.io still calls the `connect` handler before its
first write and still looks up `_websocket_handler` on the socket; if an upgrade moves
either, test_fanout.test_broadcasts_take_the_direct_path fails, and these check that what
the queue does instead of the writer task (back-pressure, order, closing) still holds.
The RFC 6455 rules themselves are byte-level tests of protocol.py (test_ws_protocol.py);
these are about what crosses the wire.
"""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import websocket
from conftest import DIRECT_RUNTIMES, ROOT, fill_database, free_port, http_get, in_async_mode
from test_fanout import metric, raw_client

READING = re.compile(r'42\["random_number",\{"seq":(\d+),')

pytestmark = pytest.mark.fast_path


@pytest.fixture(params=DIRECT_RUNTIMES)
def server_factory(server_factory, request):
    """Every server here under each runtime with a direct path (randstream/transport)."""
    return in_async_mode(server_factory, request.param)


def test_a_client_that_reads_late_gets_every_frame_whole_and_in_order(server_factory, tmp_path):
    # A couple of hundred readings stored (not 2 s of ticks): each answer below is ~10 KB.
    db = fill_database(tmp_path / "readings.sqlite3", 200)
    server = server_factory("--interval", "0.01", "--history", "5000", db=str(db))
    slow = raw_client(server.url, rcvbuf=4096)
    for _ in range(25):  # within the rate limit's burst; together more than the kernel buffers hold
        slow.send('42["resume",{"after":0}]')
    deadline = time.monotonic() + 20  # readings pile up behind the answers, in its queue
    while metric(server, 'random_stream_broadcast_sends_total{path="queued"}') == 0:
        assert time.monotonic() < deadline, "the slow client's frames never had to wait"
        time.sleep(0.2)
    answers, live = [], []
    while len(live) < 300:
        message = slow.recv()
        if message == "2":
            slow.send("3")
        elif message.startswith('42["history"'):
            answers.append(json.loads(message[2:])[1]["readings"])
        elif match := READING.match(message):
            live.append(int(match[1]))
    # The snapshot, then answers until the unread ones reach live.MAX_WAITING_ANSWERS (the
    # rest get an `error`); each whole.
    assert len(answers) >= 2 and all(len(a) > 100 for a in answers[1:]), "the snapshot, then answers"
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


def socket_descriptors(pid: int) -> int:
    fd_dir = f"/proc/{pid}/fd"
    count = 0
    for name in os.listdir(fd_dir):
        try:
            count += os.readlink(f"{fd_dir}/{name}").startswith("socket:")
        except OSError:  # closed meanwhile
            pass
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_each_runtime_serves_websockets_directly_with_one_descriptor_a_client(server_factory):
    server = server_factory("--interval", "0.05")
    line = f"transport: fast path: direct WebSocket fan-out under {server_factory.mode}, one pinger"
    assert line in server.log()
    clients = [raw_client(server.url) for _ in range(5)]
    for ws in clients:
        assert any(READING.match(ws.recv()) for _ in range(5)), "readings arrive"
    direct = metric(server, 'random_stream_broadcast_sends_total{path="direct"}')
    assert direct >= 5
    # The listening socket and the clients' (engine.io's simple-websocket driver takes two
    # each). HTTP connections of /metrics may still be closing: wait for the count to settle.
    deadline = time.monotonic() + 5
    while socket_descriptors(server.proc.pid) != 1 + 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert socket_descriptors(server.proc.pid) == 1 + 5, "one descriptor a client"
    for ws in clients:
        ws.close()


def test_a_broken_websocket_handshake_is_refused_and_forgotten(server_factory):
    """Upgrade asked, but no key or an unknown version: refused, no session left behind."""
    server = server_factory("--interval", "0.05")
    for headers in (b"Sec-WebSocket-Version: 13\r\n",  # no key
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 99\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
                        b"Upgrade: websocket\r\nConnection: Upgrade\r\n" + headers + b"\r\n")
            answer = raw.recv(4096)
            assert re.match(rb"HTTP/1.1 4\d\d ", answer), answer  # eventlet: 400 or 426
    ws = raw_client(server.url)
    assert any(READING.match(ws.recv()) for _ in range(5)), "others are served"
    ws.close()
    deadline = time.monotonic() + 5
    while metric(server, "random_stream_connected_clients") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(server, "random_stream_connected_clients") == 0
    assert "Traceback" not in server.log()


@contextlib.contextmanager
def plain_server(tmp_path, monkey: str, mode: str, serve: str):
    """The app under a WSGI server other than ours (`serve`, with {port}): its URL, once
    it answers; stopped at the end, and it must have printed no traceback."""
    port = free_port()
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent(monkey) + textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from random_stream import create_app
        from randstream.config import Settings
        app = create_app(Settings(db=":memory:", interval=0.05, async_mode={mode!r}))
        app.extensions["stream"].start()
    """) + textwrap.dedent(serve).format(port=port))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if http_get(url + "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0].decode()
    assert "Traceback" not in output


def ten_readings_then_leave(url: str, *, before_leaving=lambda: None) -> None:
    """A raw client gets ten readings in a row, leaves, and the server forgets it."""
    ws = raw_client(url)
    seen = []
    while len(seen) < 10:
        if match := READING.match(ws.recv()):
            seen.append(int(match[1]))
    assert seen == list(range(seen[0], seen[0] + 10))
    before_leaving()
    ws.close()
    deadline = time.monotonic() + 5
    while http_get(url + "/healthz")[1]["clients"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http_get(url + "/healthz")[1]["clients"] == 0


def test_under_a_plain_gevent_server_engineio_serves_its_own_way(tmp_path):
    """A pywsgi server other than ours offers no Detach: engine.io's driver serves there."""
    monkey = "from gevent import monkey\nmonkey.patch_all()\n"
    serve = """
        from gevent.pywsgi import WSGIServer
        WSGIServer(("127.0.0.1", {port}), app, log=None).serve_forever()
    """
    with plain_server(tmp_path, monkey, "gevent", serve) as url:
        def no_direct_sends():
            _, text = http_get(url + "/metrics")
            assert 'random_stream_broadcast_sends_total{path="direct"} 0.0' in text

        ten_readings_then_leave(url, before_leaving=no_direct_sends)


# The reader over the wire: close frames, protocol errors, hostile streams (the rules
# themselves, byte by byte: test_ws_protocol.py) ---------------------------------------------

def frame(opcode, payload: bytes, fin=True, masked=True, mask=b"\x01\x02\x03\x04"):
    header = bytes(((0x80 if fin else 0) | opcode, (0x80 if masked else 0) | len(payload)))
    if not masked:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_code(ws):
    """The status code of the close frame the server sent, reading past other frames."""
    ws.settimeout(5)
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big") if data else None


def test_a_client_close_frame_is_answered_and_the_client_forgotten(server_factory):
    server = server_factory("--interval", "0.05")
    ws = raw_client(server.url)
    assert metric(server, "random_stream_connected_clients") == 1
    ws.sock.sendall(frame(0x8, (1000).to_bytes(2, "big") + b"bye"))
    assert close_code(ws) == 1000
    deadline = time.monotonic() + 5
    while metric(server, "random_stream_connected_clients") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(server, "random_stream_connected_clients") == 0


def test_protocol_errors_close_with_their_code_and_others_go_on(server_factory):
    server = server_factory("--interval", "0.05")
    bystander = raw_client(server.url)
    # Every rule and its code is a byte-level test (test_ws_protocol.py); here, that the
    # close frame crosses the wire for a rule of the header and one of the payload.
    cases = [
        (frame(0x1, b"42[]", masked=False), 1002),  # clients must mask
        (frame(0x1, b"\xff\xfe"), 1007),  # text that is not UTF-8
    ]
    for data, code in cases:
        ws = raw_client(server.url)
        ws.sock.sendall(data)
        assert close_code(ws) == code, data
        ws.close()
    seen = []
    while len(seen) < 5:
        if match := READING.match(bystander.recv()):
            seen.append(int(match[1]))
    assert seen == list(range(seen[0], seen[0] + 5))
    assert "Traceback" not in server.log()
    bystander.close()


def test_under_a_plain_eventlet_server_the_connection_keeps_its_task(tmp_path):
    """socketio.run() and eventlet.wsgi.server offer no Detach: the HTTP task then waits
    for the connection to end instead of closing it."""
    monkey = "import eventlet\neventlet.monkey_patch()\n"
    serve = """
        import eventlet.wsgi
        eventlet.wsgi.server(eventlet.listen(("127.0.0.1", {port})), app, log_output=False)
    """
    with plain_server(tmp_path, monkey, "eventlet", serve) as url:
        ten_readings_then_leave(url)


def test_hostile_frame_streams_are_cut_off_without_stalling_anyone(server_factory):
    server = server_factory("--interval", "0.05")
    bystander = raw_client(server.url)
    # Endless empty continuations of one message: refused after a bounded number of pieces.
    ws = raw_client(server.url)
    ws.sock.sendall(frame(0x1, b"4", fin=False) + frame(0x0, b"", fin=False) * 200)
    assert close_code(ws) == 1009
    ws.close()
    # Pings from a client that never reads: its answers pile up only so far, then it is cut.
    greedy = raw_client(server.url, rcvbuf=4096)
    try:
        for _ in range(2000):
            greedy.sock.sendall(frame(0x9, b"x" * 125) * 10)
    except OSError:
        pass  # cut off: what the server does is the point
    deadline = time.monotonic() + 10
    while metric(server, "random_stream_connected_clients") > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(server, "random_stream_connected_clients") == 1
    seen = []
    while len(seen) < 5:
        if match := READING.match(bystander.recv()):
            seen.append(int(match[1]))
    assert seen == list(range(seen[0], seen[0] + 5))
    assert "Traceback" not in server.log()
    bystander.close()


def test_a_server_side_close_arrives_whole_even_with_input_unread(server_factory):
    server = server_factory("--interval", "0.2")
    ws = raw_client(server.url)
    # An invalid packet, and behind it more input the server will never look at.
    ws.sock.sendall(frame(0x1, b"xyz") + frame(0x1, b"3") * 500)
    ws.settimeout(5)
    frames = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)  # a reset would raise here
        frames.append((opcode, data))
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
    assert frames[-1][0] == websocket.ABNF.OPCODE_CLOSE


def test_binary_packets_get_binary_frames():
    from engineio.packet import MESSAGE, Packet

    from randstream.transport.eventlet import Connection

    class EngineIO:
        ping_interval, ping_timeout = 25, 20
        max_http_buffer_size = 64 * 1024

    class Socket:
        server = EngineIO()

    connection = Connection(Socket())  # not open yet: frames wait in order
    connection.put(Packet(MESSAGE, b"\x01\x02"))
    connection.put(Packet(MESSAGE, "hi"))
    assert connection.pending == [b"\x82\x02\x01\x02", b"\x81\x034hi"]
