"""Connections that wait (issue 19, items 1 and 2): slow request bodies, one address's share
of the waiting connections, and descriptors released when a connection ends.

Every server test drives a real server over raw sockets on 127.0.0.x; the rules themselves
(limits.py, waiting.py) are tested directly.
"""

from __future__ import annotations

import ipaddress
import os
import resource
import select
import socket
import time

import pytest
from conftest import http_get
from test_metrics import Scrape

from randstream.limits import (
    BODY_GRACE,
    BODY_LIMIT,
    BODY_RATE,
    body_deadline,
    body_to_read,
    peer_key,
)
from randstream.waiting import (
    ANSWERS_PER_ADDRESS,
    PER_ADDRESS,
    PLAIN_ANSWERS,
    WAITING_LIMIT,
    Waiting,
)

MODES = ["eventlet", "gevent"]
SLOW_BODY = 60_000  # bytes announced: within BODY_LIMIT, 12 s to arrive at BODY_RATE
TOKEN = "ingest-token-for-tests"


def connect(port: int, address: str = "127.0.0.1", data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(address, 0))
    if data:
        sock.sendall(data)
    return sock


def slow_body(port: int, address: str = "127.0.0.1", length: int = SLOW_BODY) -> socket.socket:
    """A POST whose headers are complete and whose body has only begun."""
    return connect(port, address, b"POST /api/latest HTTP/1.1\r\nHost: x\r\nContent-Length: "
                   + str(length).encode() + b"\r\n\r\n0123456789")


def closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes `sock` within `timeout` (what it answered is read and dropped)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def answer(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server writes until it closes (or `timeout`)."""
    sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return got


def health_from(port: int, address: str) -> int:
    """/healthz's status for a client at `address`; 0 if no answer came within 5 s."""
    with connect(port, address, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") as s:
        got = answer(s, 5)
    return int(got.split(b" ", 2)[1]) if got else 0


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle(pid: int, at_most: int, timeout: float = 10.0) -> int:
    """The server's descriptor count, once at or below `at_most` (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while (count := descriptors(pid)) > at_most and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


# The rules -----------------------------------------------------------------------------------

def test_bodies_are_read_whole_up_to_the_limit_and_larger_ones_not_at_all():
    assert body_to_read({}) == 0
    assert body_to_read({"CONTENT_LENGTH": "12"}) == 12
    assert body_to_read({"CONTENT_LENGTH": str(BODY_LIMIT)}) == BODY_LIMIT
    assert body_to_read({"CONTENT_LENGTH": str(BODY_LIMIT + 1)}) is None
    assert body_to_read({"HTTP_TRANSFER_ENCODING": "chunked"}) == BODY_LIMIT + 1
    assert body_to_read({"HTTP_UPGRADE": "websocket", "CONTENT_LENGTH": "5"}) == 0
    assert body_deadline(0) == BODY_GRACE
    assert body_deadline(BODY_LIMIT) == BODY_GRACE + BODY_LIMIT / BODY_RATE
    assert body_deadline(10**9) == body_deadline(BODY_LIMIT)


def test_waiting_connections_count_by_peer_and_trusted_proxies_by_none():
    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    assert peer_key(("203.0.113.5", 4000)) == "203.0.113.5"
    assert peer_key(("::ffff:203.0.113.5", 4000, 0, 0)) == "203.0.113.5"
    assert peer_key(("2001:db8::1", 4000, 0, 0)) == "2001:db8::/64"
    assert peer_key(("10.1.2.3", 4000), trusted) is None
    assert peer_key("/run/socket") is None


def test_a_burst_from_one_address_is_not_scanned_again_on_every_accept(monkeypatch):
    """Fails before: while the server had read none of them (one turn of the loop takes up
    to 256 new connections), every connection past an address's share scanned its 64
    oldest for a silent one again, each with an ioctl: 3,000 half-sent headers from one
    address cost 440,000 calls, a second of work that a /healthz waited behind
    (bench/abuse.py slowloris). Now a scan that found none silent waits RESCAN."""
    import randstream.waiting as waiting_module

    calls = []
    real = waiting_module.unread_bytes
    monkeypatch.setattr(waiting_module, "unread_bytes", lambda sock: calls.append(1) or real(sock))
    now = [1000.0]
    with socket.create_server(("127.0.0.1", 0), backlog=200) as listener:
        peers, accepted = [], []
        try:
            for _ in range(3 * PER_ADDRESS):
                peers.append(socket.create_connection(listener.getsockname()))
                peers[-1].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half-sent, and unread
                accepted.append(listener.accept()[0])
            time.sleep(0.1)
            waiting = Waiting(limit=10_000, clock=lambda: now[0])
            for sock in accepted[:-1]:
                waiting.add(sock, ("192.0.2.1", 1))
            assert len(calls) == waiting.SCAN, "one scan found none silent; the rest waited"
            assert len(waiting.addresses["192.0.2.1"]) == len(accepted) - 1, "none was closed"
            accepted[0].recv(100)  # the server read the oldest: it is silent now
            now[0] += 2 * waiting.RESCAN
            waiting.add(accepted[-1], ("192.0.2.1", 1))
            assert accepted[0] not in waiting.sockets, "a moment later the scan found it"
            peers[0].settimeout(2)
            assert peers[0].recv(1) == b"", "and closed it"
        finally:
            for sock in peers + accepted:
                sock.close()


def test_past_its_share_an_address_loses_its_own_oldest_silent_connection():
    """Fails on the old code: Waiting counted no addresses."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peers, accepted = [], []
        for _ in range(5):
            peers.append(socket.create_connection(listener.getsockname()))
            accepted.append(listener.accept()[0])
        try:
            waiting = Waiting(limit=10, per_address=2)
            peers[0].sendall(b"GET / HTTP/1.1\r\n\r\n")  # in, unread: the server is behind
            time.sleep(0.1)
            for sock in accepted[:3]:
                waiting.add(sock, ("192.0.2.1", 1))
            assert list(waiting.sockets) == [accepted[0], accepted[2]], \
                "its oldest has a request unread: its silent one behind made room"
            peers[1].settimeout(2)
            assert peers[1].recv(1) == b"", "the silent one was closed"
            waiting.add(accepted[3], ("192.0.2.2", 1))  # another address: its own share
            waiting.add(accepted[4], ("192.0.2.1", 1))
            assert accepted[3] in waiting.sockets and accepted[4] in waiting.sockets
            assert accepted[2] not in waiting.sockets, "192.0.2.1's oldest silent one went"
            assert waiting.counters.refused == {"waiting_per_address": 2}
            waiting.discard(accepted[4])
            assert set(waiting.addresses) == {"192.0.2.1", "192.0.2.2"}
            waiting.discard(accepted[0])
            assert set(waiting.addresses) == {"192.0.2.2"}
        finally:
            for sock in peers + accepted:
                sock.close()


# Slow and large bodies -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_one_address_holds_at_most_its_share_of_slow_bodies(server_factory, mode):
    """Fails on the old code: a request body in progress was waited for without limit (the
    attack: 1,288 such connections from one address filled every slot, /healthz hung)."""
    server = server_factory("--async-mode", mode)
    held = [slow_body(server.port) for _ in range(PER_ADDRESS)]
    try:
        time.sleep(0.5)
        assert not closed(held[0], 0.1), "within its share, nothing is closed"
        held.append(slow_body(server.port))
        assert closed(held[0], 5), "past its share, the address's oldest silent one is closed"
        assert not any(closed(s, 0.05) for s in held[1:])
        assert health_from(server.port, "127.0.0.2") == 200
        # The scrape's own connection comes from the held ones' address: one more closed.
        assert Scrape(server.url).value("random_stream_refused_connections_total",
                                        reason="waiting_per_address") == 2
    finally:
        for sock in held:
            sock.close()
    assert server.log().count("from one address wait") == 1
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("mode", MODES)
def test_a_body_slower_than_the_rate_is_cut_with_408(server_factory, mode):
    """Fails on the old code: a body arriving a byte a second was waited for without end."""
    server = server_factory("--async-mode", mode)
    sock = slow_body(server.port, length=1000)  # due within BODY_GRACE + 1000 / BODY_RATE
    try:
        sock.settimeout(0.5)
        got = b""
        deadline = time.monotonic() + BODY_GRACE + 5
        while not got and time.monotonic() < deadline:
            try:
                sock.sendall(b"x")
                got = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
        assert got.startswith(b"HTTP/1.1 408 "), got
        assert b"Connection: close" in got and b"too slowly" in got
        assert closed(sock, 2)
    finally:
        sock.close()
    assert Scrape(server.url).value("random_stream_refused_connections_total",
                                    reason="slow_body") == 1
    assert server.log().count("request body came slower") == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_body_over_the_limit_is_never_read_and_the_answer_closes(server_factory, mode):
    """Fails on the old code: after answering, the server read (and dropped) the announced
    megabytes before the next request, at whatever pace the client sent them."""
    server = server_factory("--async-mode", mode)
    sock = connect(server.port, data=b"POST /healthz HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Length: 10000000\r\n\r\n")
    try:
        got = answer(sock, 5)
        assert got.startswith(b"HTTP/1.1 405 "), got
        assert b"Connection: close" in got
    finally:
        sock.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_whole_body_reaches_the_route_as_sent(server_factory, mode):
    server = server_factory("--async-mode", mode, "--source", "http", "--ingest-token", TOKEN)
    body = b'{"value": 42}'
    with connect(server.port, data=b"POST /api/readings HTTP/1.1\r\nHost: x\r\nAuthorization: "
                 b"Bearer " + TOKEN.encode() + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body) as sock:
        got = answer(sock, 5)
    assert got.startswith(b"HTTP/1.1 201 "), got
    with connect(server.port, data=b"POST /api/readings HTTP/1.1\r\nHost: x\r\nAuthorization: "
                 b"Bearer " + TOKEN.encode() + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % (BODY_LIMIT + 1)
                 + b" " * (BODY_LIMIT + 1) + b"\r\n0\r\n\r\n") as sock:
        got = answer(sock, 5)
    assert got.startswith(b"HTTP/1.1 413 "), got


@pytest.mark.parametrize("mode", MODES)
def test_slow_bodies_from_many_addresses_never_fill_the_servers_slots(server_factory, mode):
    """Fails on the old code: requests with a body in progress were no waiting connections,
    and enough of them took every slot of the server's pool: /healthz hung (the attack
    with --max-connections 200: 1,288 = 200 + 1,024 + 64 of them; here 1 + 1,024 + 64)."""
    server = server_factory("--async-mode", mode, "--max-connections", "1")
    held = []
    try:
        for i in range(1100):  # 55 an address: within each one's share
            held.append(slow_body(server.port, f"127.0.0.{2 + i % 20}"))
        time.sleep(0.5)
        assert health_from(server.port, "127.0.0.99") == 200
        assert open_count(held) <= WAITING_LIMIT, "the oldest were closed to make room"
    finally:
        for sock in held:
            sock.close()
    assert "Traceback" not in server.log()


def open_count(socks: list[socket.socket]) -> int:
    """How many of `socks` the server has not closed (a closed one reads as the end)."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLIN)
    ended = 0
    for fd, _ in poller.poll(0):
        sock = next(s for s in socks if s.fileno() == fd)
        sock.setblocking(False)
        try:
            while sock.recv(65536):  # an answer (a 408, say) before the end
                pass
            ended += 1
        except BlockingIOError:
            pass
        except ConnectionResetError:
            ended += 1
    return len(socks) - ended


# Descriptors released ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_headers_cut_short_by_the_end_of_the_connection_are_not_served(server_factory, mode):
    """Fails on the old code: the half-sent request was served, to nobody (each connection
    closed to make room cost a whole request's work)."""
    server = server_factory("--async-mode", mode)
    with connect(server.port, data=b"GET /api/latest HTTP/1.1\r\nHost: x\r\n") as sock:
        sock.shutdown(socket.SHUT_WR)
        assert answer(sock, 5) == b""
    assert "Traceback" not in server.log()


def test_descriptors_of_connections_closed_to_make_room_are_released(server_factory):
    """Fails on the old code: a connection closed to make room (its headers half-sent) was
    served what it had sent, the answer's write failed, and the failure left eventlet's
    reader open: the descriptor lingered until the next full collection, a minute later
    (the attack: ~2,000 descriptors for 60-75 s, and more after each run)."""
    server = server_factory("--max-connections", "100", launch=False)
    server.preexec_fn = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
    server.start()
    before = descriptors(server.proc.pid)
    held = []
    try:
        for i in range(150):  # 36 may wait: the others are closed to make room
            held.append(connect(server.port, f"127.0.0.{2 + i % 4}",
                                b"GET /healthz HTTP/1.1\r\nHost: x\r\n"))
        time.sleep(0.5)
    finally:
        for sock in held:
            sock.close()
    assert settle(server.proc.pid, before + 2) <= before + 2


def test_descriptors_of_event_stream_readers_that_left_are_released(server_factory):
    """Fails on the old code: an event stream whose reader left failed its next write, and
    that failure left eventlet's reader open: the descriptor lingered until the next full
    collection, a minute later."""
    server = server_factory("--interval", "0.1")
    before = descriptors(server.proc.pid)
    held = [connect(server.port, data=b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
            for _ in range(20)]
    for sock in held:
        sock.settimeout(5)
        assert sock.recv(1)
        sock.close()
    assert settle(server.proc.pid, before + 2) <= before + 2
    assert http_get(server.url + "/healthz")[0] == 200


# Plain answers in progress ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_clients_that_stop_reading_answers_never_fill_the_servers_slots(server_factory, mode):
    """Fails on the old code: plain answers were not counted, and enough clients that stop
    reading them (each after a dozen pipelined requests for a static file) took every slot
    of the server's pool: /healthz and new sessions hung (here 1,100 of them with
    --max-connections 1; the pool was 1 + 1,024 + 64)."""
    server = server_factory("--async-mode", mode, "--max-connections", "1")
    requests = b"GET /static/js/dashboard.js HTTP/1.1\r\nHost: x\r\n\r\n" * 12
    held = []
    try:
        for i in range(1100):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # full after one answer
            sock.bind((f"127.0.0.{2 + i % 50}", 0))
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(requests)
            held.append(sock)
        time.sleep(1)
        assert health_from(server.port, "127.0.0.99") == 200
        with connect(server.port, "127.0.0.99", b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1"
                     b"\r\nHost: x\r\nConnection: close\r\n\r\n") as sock:
            assert answer(sock, 5).startswith(b"HTTP/1.1 200 "), "a new session gets in"
        with connect(server.port, "127.0.0.99", b"GET / HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n") as sock:
            got = answer(sock, 5)
        assert got.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in got, got[:200]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while http_get(server.url + "/")[0] != 200:  # the answers end: their places are free
        assert time.monotonic() < deadline, "the places of ended answers were not given back"
        time.sleep(0.2)
    assert server.log().count("answers are in progress") == 1
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("mode", MODES)
def test_one_address_that_stops_reading_answers_never_locks_others_out_of_the_page(
        server_factory, mode):
    """Fails before the per-address share of plain answers: one address's 300 connections,
    each stalled on a pipelined static file, held all 256 answers, and the page was a 503
    for every other client until the send timeout (45 s), again at every attack."""
    server = server_factory("--async-mode", mode)
    requests = b"GET /static/js/dashboard.js HTTP/1.1\r\nHost: x\r\n\r\n" * 12
    held = []
    try:
        for _ in range(PLAIN_ANSWERS + 44):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # full after one answer
            sock.bind(("127.0.0.2", 0))
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(requests)
            held.append(sock)
        time.sleep(1)
        with connect(server.port, "127.0.0.99", b"GET / HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n") as sock:
            got = answer(sock, 5)
        assert got.startswith(b"HTTP/1.1 200 "), got[:200]
        with connect(server.port, "127.0.0.2", b"GET / HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n") as sock:
            got = answer(sock, 5)
        assert got.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in got, got[:200]
        assert b'reason="busy_per_address"' in http_get_raw(server.port, "/metrics")
    finally:
        for sock in held:
            sock.close()
    assert server.log().count("answers to one address are in progress") == 1
    assert "Traceback" not in server.log()


def http_get_raw(port: int, path: str) -> bytes:
    with connect(port, "127.0.0.99", f"GET {path} HTTP/1.1\r\nHost: x\r\n"
                 "Connection: close\r\n\r\n".encode()) as sock:
        return answer(sock, 5)


@pytest.mark.parametrize("mode", MODES)
def test_the_descriptor_budget_holds_every_plain_answer_in_progress(server_factory, mode):
    """Fails before: a static file's answer holds two descriptors (its socket, and the file
    send_file keeps open until the client has read it), but the budget counted one per
    plain answer: 256 stalled downloads took 512, eating the reserve for the database,
    Redis and the listener."""
    from randstream.server import FD_RESERVE, fd_budget

    server = server_factory("--async-mode", mode)
    assert http_get(server.url + "/healthz")[0] == 200
    before = descriptors(server.proc.pid)
    requests = b"GET /static/js/dashboard.js HTTP/1.1\r\nHost: x\r\n\r\n" * 12
    held = []
    try:
        for i in range(PLAIN_ANSWERS):  # from as many addresses as their per-address share needs
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # full after one answer
            sock.bind((f"127.0.0.{2 + i // ANSWERS_PER_ADDRESS}", 0))
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(requests)
            held.append(sock)
        deadline = time.monotonic() + 10
        while descriptors(server.proc.pid) - before < 2 * PLAIN_ANSWERS:  # every answer stalled
            assert time.monotonic() < deadline, descriptors(server.proc.pid) - before
            time.sleep(0.1)
        time.sleep(0.5)
        answers_hold = descriptors(server.proc.pid) - before
    finally:
        for sock in held:
            sock.close()
    planned = fd_budget(0) - WAITING_LIMIT - FD_RESERVE  # the plain answers' share
    assert answers_hold <= planned, (answers_hold, planned)
