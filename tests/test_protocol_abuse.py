"""Protocol-level abuse against a real server (issue 11): binary attachments, resume floods,
the close handshake, frames that nest too deep, control-traffic floods, ping timing.

Each flood runs next to a well-behaved watcher (python-socketio) that must see every seq,
with no gap between ticks of MAX_GAP intervals or more, and the server's memory must come
back after the attackers leave.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time

import psutil
import pytest
import websocket
from conftest import ROOT, Viewer, fill_database
from rawsocket import Polling, RawSocket

from randstream.config import ConfigError, Settings

INTERVAL = 1.0
# Before the fixes the floods stalled the ticker for 8-19 s. The goal (ticks within 1.5
# intervals) is measured by bench/abuse.py; here the bound leaves room for a machine
# busy with other work (2 s gaps seen at load average 14 on 2 cores), so only a real
# stall fails.
MAX_GAP = 3.0


def timed_watcher(url: str) -> tuple[Viewer, list[float]]:
    """A Viewer that also notes when each reading arrived."""
    viewer = Viewer(url)
    arrivals: list[float] = []
    viewer.client.on("random_number", _also(viewer.client.handlers["/"]["random_number"], arrivals))
    return viewer, arrivals


def _also(record, arrivals):
    def both(data):
        arrivals.append(time.monotonic())
        record(data)
    return both


def assert_watched_well(viewer: Viewer, arrivals: list[float], since: float) -> None:
    seqs = [seq for seq, _ in viewer.readings()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the watcher missed readings"
    times = [t for t in arrivals if t >= since]
    assert len(times) >= 3, "the watcher got readings during the flood"
    gap = max(b - a for a, b in zip(times, times[1:]))
    assert gap < MAX_GAP * INTERVAL, f"a {gap:.2f} s gap between ticks"


def rss_mb(server) -> float:
    return psutil.Process(server.proc.pid).memory_info().rss / 2**20


def settle_rss(server, target: float, slack: float, timeout: float = 15.0) -> float:
    """RSS once it is back within `slack` MB of `target`, or the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        rss = rss_mb(server)
        if rss <= target + slack or time.monotonic() > deadline:
            return rss
        time.sleep(0.5)


def attacker(url: str) -> websocket.WebSocket:
    ws = websocket.create_connection(
        url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket",
        timeout=10, suppress_origin=True)
    assert ws.recv().startswith("0")
    ws.send("40")
    return ws


def closed_by_server(ws: websocket.WebSocket, timeout: float = 10.0) -> bool:
    """Whether the server closes this connection (reading past what it sends)."""
    ws.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE or (opcode == 1 and data == b"1"):
                return True
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return True
    except websocket.WebSocketTimeoutException:
        return False
    return False


def in_threads(n: int, work) -> list:
    results = [None] * n

    def run(i):
        try:
            results[i] = work(i)
        except Exception as exc:  # a refused attacker is a result too
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# 3. Binary events and acks ------------------------------------------------------------------

@pytest.mark.parametrize("header", [
    '451-["resume",{"_placeholder":true,"num":0}]',
    '451000000-["resume",{"_placeholder":true,"num":0}]',
    '461-[{"_placeholder":true,"num":0}]',
])
def test_binary_event_and_ack_packets_close_the_connection(server_factory, header):
    server = server_factory("--interval", "0.2")
    ws = RawSocket(server.url)
    ws.join()
    ws.send(header)
    assert ws.wait_closed(10), "a binary packet is refused, not buffered"
    # Over polling too.
    polling = Polling(server.url)
    assert polling.post(b"40")[0] == 200
    polling.poll()
    status, _, _ = polling.post(header.encode())
    if status != 400:
        status, body = polling.poll()
        assert status == 400 or body.endswith(b"1"), "refused or closed over polling"
    assert "Traceback" not in server.log()


def test_a_binary_attachment_flood_is_cut_off_and_memory_comes_back(server_factory):
    server = server_factory("--interval", str(INTERVAL))
    viewer, arrivals = timed_watcher(server.url)
    viewer.wait_for(lambda: len(viewer.numbers) >= 2)
    before = rss_mb(server)
    since = time.monotonic()
    chunk = os.urandom(60 * 1024)

    def flood(i):
        ws = attacker(server.url)
        ws.send('451000000-["resume",{"_placeholder":true,"num":0}]')
        try:
            for _ in range(30):  # within the message rate limit: 10 a second
                ws.send_binary(chunk)
                time.sleep(0.1)
        except (OSError, websocket.WebSocketException):
            return True  # the server closed it
        return closed_by_server(ws, 5)

    results = in_threads(20, flood)
    assert all(r is True for r in results), f"attackers kept their connections: {results}"
    time.sleep(3 * INTERVAL)  # ticks to look at, however soon the attackers were cut off
    assert_watched_well(viewer, arrivals, since)
    after = settle_rss(server, before, 5)
    assert after <= before + 5, f"RSS {before:.0f} MB before, {after:.0f} MB after"
    viewer.close()


# 4. Resume floods ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def filled_db(tmp_path_factory):
    """A store with 1,000 readings: resume answers of 900 (42 KB each, as in production)."""
    return fill_database(tmp_path_factory.mktemp("filled") / "readings.sqlite3", 1000)


@pytest.mark.parametrize("attackers", [100, 200])
def test_a_resume_flood_leaves_the_ticks_on_time(server_factory, filled_db, tmp_path, attackers):
    db = tmp_path / "readings.sqlite3"
    shutil.copy(filled_db, db)
    # Every attacker is on 127.0.0.1: lift the per-address limit, which would stop them
    # first (tests/test_connections.py covers it); here the resume budget must hold alone.
    server = server_factory("--interval", str(INTERVAL), "--max-per-address", "1000", db=str(db))
    viewer, arrivals = timed_watcher(server.url)
    viewer.wait_for(lambda: len(viewer.numbers) >= 2)
    # As many plain clients first: what connections cost is in the baseline, and what
    # the flood leaves behind is not.
    for ws in in_threads(attackers, lambda i: attacker(server.url)):
        if isinstance(ws, websocket.WebSocket):
            ws.close()
    time.sleep(2)
    sockets = [ws for ws in in_threads(attackers, lambda i: attacker(server.url))
               if isinstance(ws, websocket.WebSocket)]
    assert len(sockets) == attackers
    before = rss_mb(server)
    since = time.monotonic()
    rng = random.Random(attackers)

    def flood(i):
        for _ in range(29):  # inside the rate limit's burst of 30
            sockets[i].send(f'42["resume",{{"after":{rng.randrange(0, 1000)}}}]')

    in_threads(attackers, flood)
    time.sleep(4 * INTERVAL)  # the answers wait unread meanwhile
    assert_watched_well(viewer, arrivals, since)
    for ws in sockets:
        ws.close()
    # Some of the 29 x 200 handler tasks' memory stays with the allocator (8-11 MB, the
    # most under gevent); before the fix, the unread answers kept 50-110 MB.
    after = settle_rss(server, before, 20)
    assert after <= before + 20, f"RSS {before:.0f} MB before, {after:.0f} MB after"
    viewer.close()


# 7. The close handshake ---------------------------------------------------------------------

def handshake_bytes(port: int) -> tuple[bytes, str]:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
    return request.encode(), key


def masked(opcode: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) frames in what the server wrote after its HTTP response."""
    frames, pos = [], 0
    while len(data) - pos >= 2:
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        start = pos + 2
        if n == 126:
            start, n = pos + 4, int.from_bytes(data[pos + 2:pos + 4], "big")
        elif n == 127:
            start, n = pos + 10, int.from_bytes(data[pos + 2:pos + 10], "big")
        if len(data) < start + n:
            break
        frames.append((opcode, data[start:start + n]))
        pos = start + n
    return frames


def read_to_eof(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError("no FIN from the server") from None
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize("after_handshake", [
    masked(0x8, (1000).to_bytes(2, "big")),  # the client closes at once
    masked(0x1, b"3") * 30 + masked(0x8, (1000).to_bytes(2, "big")),  # pongs queued, then close
    bytes((0x81, 0x02)) + b"40",  # breaks the protocol at once (unmasked)
])
def test_the_open_packet_and_a_close_frame_arrive_before_the_fin(server_factory, after_handshake):
    server = server_factory("--interval", "0.2")
    for attempt in range(20):
        request, key = handshake_bytes(server.port)
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(request)
            sock.settimeout(10)
            head = b""
            while not head.endswith(b"\r\n\r\n"):  # the 101, and not a byte further
                head += sock.recv(1)
            sock.sendall(after_handshake)  # while the server writes its first frames
            rest = read_to_eof(sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        assert accept in head
        frames = server_frames(rest)
        assert frames and frames[0][0] == 1 and frames[0][1].startswith(b"0{"), \
            f"try {attempt}: no OPEN packet first: {frames[:2]}"
        assert frames[-1][0] == 8, f"try {attempt}: no close frame before the FIN: {frames[-2:]}"
        assert sum(len(p) + 2 for _, p in frames) <= len(rest), "every frame whole"
    assert "Traceback" not in server.log()


# 8. Frames that nest too deep ----------------------------------------------------------------

def test_a_deeply_nested_frame_closes_with_a_code_and_logs_one_line(server_factory):
    server = server_factory("--interval", "0.2")
    for frame in ("4" + "[" * 1000, '42["resume",' + "[" * 1000, "4" + "{" * 1000):
        ws = RawSocket(server.url)
        ws.join()
        ws.ws.send(frame)
        ws.ws.settimeout(5)
        while True:
            opcode, data = ws.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
        assert int.from_bytes(data[:2], "big") in (1002, 1011)
        ws.close()
    polling = Polling(server.url)
    polling.post(b"40")
    status, _, _ = polling.post(("4" + "[" * 1000).encode())
    assert status == 400
    time.sleep(0.5)
    log = server.log()
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]
    assert len([line for line in log.splitlines() if "bracket" in line]) == 1, log[-3000:]


# 9. Control traffic ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["pong", "noop", "ping frame", "pong frame"])
def test_a_control_traffic_flood_closes_that_connection_only(server_factory, kind):
    server = server_factory("--interval", "0.2")
    bystander = RawSocket(server.url)
    bystander.join()
    ws = attacker(server.url)
    send = {
        "pong": lambda: ws.send("3"),
        "noop": lambda: ws.send("6"),
        "ping frame": lambda: ws.ping(b"x"),
        "pong frame": lambda: ws.pong(b"x"),
    }[kind]
    closed = False
    try:
        for _ in range(2000):
            send()
    except (OSError, websocket.WebSocketException):
        closed = True
    assert closed or closed_by_server(ws, 5), "a flood of control traffic ends the connection"
    assert bystander.wait_event("random_number"), "others go on"
    assert "Traceback" not in server.log()


def test_a_control_traffic_flood_over_polling_is_refused(server_factory):
    server = server_factory("--interval", "0.2")
    polling = Polling(server.url)
    polling.post(b"40")
    statuses = {polling.post("\x1e".join(["3"] * 10).encode())[0] for _ in range(20)}
    assert 429 in statuses or 400 in statuses, statuses
    assert "Traceback" not in server.log()


# 10. Ping timing ------------------------------------------------------------------------------

def test_a_fractional_ping_interval_is_refused():
    with pytest.raises(ConfigError, match="--ping-interval must be a whole number"):
        Settings(ping_interval=1.9)
    assert Settings(ping_interval=2.0).ping_interval == 2


NPM_CLIENT = ROOT / "tests" / "npm_client"


def npm_client() -> list[str]:
    node = shutil.which("node")
    if node is None or not (NPM_CLIENT / "node_modules" / "socket.io-client").is_dir():
        if os.environ.get("CI"):
            pytest.fail("socket.io-client is not installed (tests/run installs it with npm)")
        pytest.skip("socket.io-client is not installed (tests/run installs it with npm)")
    return [node, str(NPM_CLIENT / "hold.mjs")]


def test_socket_io_client_stays_connected_with_short_pings(server_factory):
    """socket.io-client gives up pingInterval + pingTimeout after the last ping."""
    command = npm_client()
    server = server_factory("--interval", "0.5", "--ping-interval", "1", "--ping-timeout", "1")
    result = subprocess.run([*command, server.url, "15"], capture_output=True, text=True,
                            timeout=60, check=False, cwd=NPM_CLIENT)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["connected"] and outcome["disconnects"] == [], outcome
    assert outcome["pings"] >= 10 and outcome["readings"] >= 25, outcome

