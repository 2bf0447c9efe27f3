"""Connection-level defences (issue 11, part A): descriptors, idle sockets, per-address
limits, cross-site handshakes, a swapped database file, and eventlet's parser refusals.

Every test here drives a real server over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import os
import resource
import socket
import time

import pytest
import websocket
from conftest import ServerProcess, http_get
from rawsocket import Polling, RawSocket, http

from randstream.config import ConfigError, load


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    server = ServerProcess((), ":memory:", tmp_path_factory.mktemp("shared") / "server.log", None)
    server.start()
    yield server
    server.kill()


def raw_request(url: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh TCP connection; everything the server answers until it closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except TimeoutError:
            pass
    return got


def closed_by_server(sock: socket.socket, timeout: float = 20.0) -> bool:
    """Read until the server closes; False if it still holds the connection after timeout."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def consecutive(seqs: list[int]) -> bool:
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


# 1. Descriptors run out --------------------------------------------------------------------

def test_running_out_of_descriptors_is_survived_logged_once_and_recovered(server_factory):
    """Fails on the old code: eventlet's accept loop re-raised EMFILE and the process ended."""
    server = server_factory("--max-connections", "300", launch=False,
                            env={"RANDOM_STREAM_MAX_PER_ADDRESS": "1000"})
    server.preexec_fn = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (120, 120))
    server.start()
    held: list[RawSocket] = []
    try:
        for _ in range(200):  # sessions are never closed to make room: descriptors run out
            try:
                sock = RawSocket(server.url, timeout=3)
            except (OSError, websocket.WebSocketException):
                break
            held.append(sock)
            sock.join()
        else:
            pytest.fail("200 sessions fit in 120 descriptors?")
        time.sleep(1.5)  # accept() keeps failing meanwhile
        assert server.proc.poll() is None, f"the server died:\n{server.log()}"
        assert server.log().count("cannot accept connections") == 1, server.log()
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # serves again once descriptors are free
        try:
            if http_get(server.url + "/healthz", timeout=2)[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        pytest.fail(f"no /healthz after the sessions left:\n{server.log()}")
    assert "accepting connections again" in server.log()
    assert "Traceback" not in server.log()


def test_idle_sockets_past_the_descriptor_limit_are_closed_oldest_first(server_factory):
    """Fails on the old code: 300 idle connects with `ulimit -n 200` ended the process."""
    server = server_factory("--max-connections", "100", launch=False)
    server.preexec_fn = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
    server.start()
    socks = []
    try:
        for _ in range(150):  # silent: on Linux the kernel keeps them (TCP_DEFER_ACCEPT)
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(0.5)
        if hasattr(socket, "TCP_DEFER_ACCEPT"):
            held = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
            assert held < 100, f"{held} descriptors for 150 silent connections"
        half_sent = []
        for _ in range(300):  # these are accepted (they sent something), then wait
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            half_sent.append(sock)
        socks += half_sent
        status, body = http_get(server.url + "/healthz", timeout=5)
        assert status == 200, body
        assert closed_by_server(half_sent[0], timeout=2), "the oldest waiting one made room"
        assert server.proc.poll() is None
        assert "cannot accept connections" not in server.log(), "room was made before"
    finally:
        for s in socks:
            s.close()


def test_a_connection_whose_request_waits_unread_is_not_closed_to_make_room():
    """Fails on the old code: past the limit the oldest waiting connection was closed,
    though its request was in the kernel, unread (the server behind in a restart's herd:
    2,556 of 10,000 reconnecting clients cut and sent into their backoff)."""
    from randstream.server import Waiting

    with socket.create_server(("127.0.0.1", 0)) as listener:
        peers, accepted = [], []
        for _ in range(3):
            peers.append(socket.create_connection(listener.getsockname()))
            accepted.append(listener.accept()[0])
        try:
            waiting = Waiting(limit=2)
            peers[0].sendall(b"GET / HTTP/1.1\r\n\r\n")  # in, not yet read by the server
            time.sleep(0.1)
            for sock in accepted:
                waiting.add(sock)
            assert list(waiting.sockets) == [accepted[0], accepted[2]], \
                "the oldest has its request unread: the silent one behind it made room"
            assert waiting.evicted == 1
            peers[1].settimeout(2)
            assert peers[1].recv(1) == b"", "the silent one was closed"
            peers[2].sendall(b"GET / HTTP/1.1\r\n\r\n")
            time.sleep(0.1)
            assert not waiting.has_room(), "every one waiting has its request in: accepting waits"
            assert len(waiting) == 2
            waiting.discard(accepted[0])  # served
            assert waiting.has_room()
        finally:
            for sock in peers + accepted:
                sock.close()


def _tcp_queues(server_port: int, peer_port: int) -> tuple[int, int] | None:
    """(tx_queue, rx_queue) of the server's end of a loopback connection (/proc/net/tcp),
    or None once it is no longer established."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{peer_port:04X}"
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote and fields[3] == "01":
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


def _unread_by_client(sock: socket.socket) -> int:
    import fcntl
    import struct
    import termios

    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads /proc/net/tcp (Linux)")
def test_a_client_that_stops_reading_at_a_refusal_does_not_pause_accepting(server_factory):
    """Fails on the old code: a keep-alive client that stops reading, with a request the
    server refuses (400) next and more bytes after it, blocked that refusal's write while
    the connection still counted as waiting for a request, with bytes unread: at the head
    of Waiting it paused accepting for everyone until its request deadline, 5 s (the
    review: a probe's median latency 4.8 s over 30 s, one such connection and 1,030
    one-byte ones every 5 s; 2 ms after the fix)."""
    server = server_factory("--interval", "0.01", "--max-connections", "100", launch=False)
    # 180 descriptors leave 16 for connections waiting for a request (server.waiting_limit).
    server.preexec_fn = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (180, 180))
    server.start()
    host, port = "127.0.0.1", server.port
    bulk = b"GET /static/js/dashboard.js HTTP/1.1\r\nHost: x\r\n\r\n"
    refused = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"  # a 400, ours
    unread = b"X" * 20000

    def tuned(k: int) -> bytes:  # fixed readings: the same bytes every time
        return f"GET /api/history?after=0&limit={k} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    def answer_size(request: bytes) -> int:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(request.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
        return len(got) - len(b"Connection: close\r\n")  # as kept alive

    def stalled_at(requests: list[bytes], total: int):
        """A client that sent `requests`, the refused one and more, and reads nothing; with
        what the server wrote to it by now (its kernel and ours), or None if it closed."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, port))
        sock.sendall(b"".join(requests) + refused + unread)
        time.sleep(0.3)
        queues = _tcp_queues(port, sock.getsockname()[1])
        if queues is None:
            sock.close()
            return None, None
        return sock, _unread_by_client(sock) + queues[0]

    deadline = time.monotonic() + 20
    while http_get(server.url + "/api/latest")[1].get("seq", 0) < 500:  # 404 first: a dict too
        assert time.monotonic() < deadline, "the stream did not reach 500 readings"
        time.sleep(0.2)
    big = answer_size(bulk)
    # What the kernels hold for a client that reads nothing: the server's send queue, the
    # client's receive queue. Past it the server's write waits.
    probe, capacity = stalled_at([bulk] * 10, 10 * big)
    assert probe is not None
    probe.close()
    bulk_count = max(0, (capacity - 2000) // big)
    sizes = {k: bulk_count * big + answer_size(tuned(k)) for k in (1, 500)}
    assert sizes[1] < capacity < sizes[500], (capacity, sizes)
    lo, hi = 1, 500  # the largest k whose answers all fit: the refusal's write then waits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        sock, written = stalled_at([bulk] * bulk_count + [tuned(mid)], 0)
        size = bulk_count * big + answer_size(tuned(mid))
        if sock is None or written >= size:
            lo = mid
        else:
            hi = mid
        if sock is not None:
            sock.close()
    stuck, written = stalled_at([bulk] * bulk_count + [tuned(lo)], 0)
    assert stuck is not None, "the refusal's write did not wait"
    size = bulk_count * big + answer_size(tuned(lo))
    assert size < written, "the answers went out, the refusal is under way"
    silent = []
    try:
        for _ in range(17):  # one byte each: accepted (TCP_DEFER_ACCEPT), then waiting
            sock = socket.create_connection((host, port), timeout=5)
            sock.sendall(b"G")
            silent.append(sock)
        time.sleep(0.5)
        status, _ = http_get(server.url + "/healthz", timeout=15)
        assert status in (200, 503), status  # answered (503: the stream is young)
        queues = _tcp_queues(port, stuck.getsockname()[1])
        assert queues is not None and queues[1] > 0, (
            "the new connection was served only once the stuck one was let go")
    finally:
        stuck.close()
        for sock in silent:
            sock.close()


# 2. Idle, silent and half-sent connections --------------------------------------------------

def test_silent_half_sent_and_idle_sockets_leave_health_and_streams_untouched(server_factory,
                                                                              viewers):
    """Fails on the old code: 200 such sockets filled every slot and /healthz hung."""
    server = server_factory("--interval", "0.2", "--max-connections", "20")
    watcher = viewers(server.url)
    host, port = "127.0.0.1", server.port
    silent, half, idle = [], [], []
    try:
        for _ in range(70):
            silent.append(socket.create_connection((host, port)))
        for _ in range(70):
            s = socket.create_connection((host, port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            half.append(s)
        for _ in range(60):
            s = socket.create_connection((host, port))
            s.sendall(b"GET /api/latest HTTP/1.1\r\nHost: x\r\n\r\n")
            idle.append(s)
        for s in idle:  # answered, then kept alive and left idle
            s.settimeout(10)
            assert s.recv(65536).startswith(b"HTTP/1.1 ")
        for _ in range(3):
            status, body = http_get(server.url + "/healthz", timeout=5)
            assert status == 200, body
        late = viewers(server.url)  # a new WebSocket gets in too
        late.wait_for(lambda: late.numbers)
        start = watcher.last_seq()
        watcher.wait_for(lambda: watcher.last_seq() >= start + 30)  # 6 s: past the deadline
        seqs = [seq for seq, _ in watcher.readings()]
        assert consecutive(seqs), "the watcher missed no reading"
        for group in (silent, half, idle):  # the server let go of every one of them
            for s in group[-5:]:
                assert closed_by_server(s), "the server still holds an idle connection"
    finally:
        for s in silent + half + idle:
            s.close()
    assert "Traceback" not in server.log()


def test_a_long_poll_outlives_the_request_deadline(server_factory):
    """The deadline covers a request's arrival, never the application's answer."""
    server = server_factory("--interval", "8")
    session = Polling(server.url)
    assert session.post(b"40")[0] == 200
    seen = b""
    deadline = time.monotonic() + 10
    while b'"history"' not in seen and time.monotonic() < deadline:
        seen += session.poll()[1]
    started = time.monotonic()
    status, body = session.poll(timeout=20)  # waits for the next tick, up to 8 s
    waited = time.monotonic() - started
    assert status == 200 and b"random_number" in body, body
    assert waited > 0.5 or b"random_number" in seen  # it did wait, and was answered


# 5. One address, cross-site handshakes -------------------------------------------------------

def test_one_address_holds_at_most_max_per_address_sessions(server_factory):
    """Fails on the old code: --max-per-address did not exist and every handshake got in."""
    server = server_factory("--max-per-address", "3")
    held = [RawSocket(server.url) for _ in range(3)]
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            RawSocket(server.url)
        assert refused.value.status_code == 429
        status, headers, body = http("GET", server.url + "/socket.io/?EIO=4&transport=polling")
        assert status == 429 and headers.get("retry-after") and b"one address" in body
        held.pop().close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if Polling(server.url).status == 200:
                break
            time.sleep(0.2)
        else:
            pytest.fail("a freed place was not given again")
    finally:
        for sock in held:
            sock.close()
    assert server.log().count("per-address limit") == 1


def test_one_address_may_not_open_handshakes_faster_than_the_rate(server_factory):
    server = server_factory("--max-per-address", "5")
    statuses = []
    for _ in range(8):
        session = Polling(server.url)
        statuses.append(session.status)
        if session.status == 200:
            session.post(b"1")  # closed at once: only the rate can refuse the next
            time.sleep(0.05)
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:], statuses


def test_forwarded_addresses_count_only_from_trusted_proxies(server_factory):
    trusting = server_factory("--max-per-address", "2", "--trusted-proxies", "127.0.0.1")

    def handshake(url, forwarded):
        return http("GET", url + "/socket.io/?EIO=4&transport=polling",
                    headers={"X-Forwarded-For": forwarded})[0]

    assert [handshake(trusting.url, "203.0.113.5") for _ in range(3)] == [200, 200, 429]
    assert handshake(trusting.url, "203.0.113.6") == 200
    # A client cannot pose as another by writing the left end of the header itself.
    assert handshake(trusting.url, "198.51.100.1, 203.0.113.5") == 429
    untrusting = server_factory("--max-per-address", "2")
    assert [handshake(untrusting.url, f"203.0.113.{i}") for i in range(3)] == [200, 200, 429]


def test_client_address_reads_forwarded_for_from_the_right():
    from randstream.limits import client_address

    trusted = (__import__("ipaddress").ip_network("10.0.0.0/8"),)
    env = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 5.6.7.8, 10.0.0.9"}
    assert client_address(env, trusted) == "5.6.7.8"
    assert client_address(env, ()) == "10.0.0.2"
    assert client_address({"REMOTE_ADDR": "9.9.9.9", "HTTP_X_FORWARDED_FOR": "1.1.1.1"},
                          trusted) == "9.9.9.9"
    assert client_address({"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "junk"},
                          trusted) == "10.0.0.2"


@pytest.mark.parametrize("peer, forwarded, key", [
    # Fail before: a dual-stack listener's IPv4-mapped peer was no trusted proxy.
    ("::ffff:10.0.0.2", "5.6.7.8", "5.6.7.8"),
    ("10.0.0.2", "5.6.7.8:4431", "5.6.7.8"),  # a hop with its port, as some proxies write it
    ("10.0.0.2", "[2001:db8::1]:443", "2001:db8::/64"),
    # One IPv6 client is one /64, however it spells its address.
    ("2001:DB8:0:0::1", "", "2001:db8::/64"),
    ("2001:db8::ffff:1", "", "2001:db8::/64"),
    ("::ffff:192.0.2.7", "", "192.0.2.7"),
    ("", "", "unknown"),
])
def test_client_addresses_are_one_key_per_client(peer, forwarded, key):
    import ipaddress

    from randstream.limits import client_address

    env = {"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": forwarded}
    assert client_address(env, (ipaddress.ip_network("10.0.0.0/8"),)) == key


def test_trusted_proxies_setting():
    assert load(["--trusted-proxies", "127.0.0.1, 10.0.0.0/8"], {}).trusted_proxies == (
        "127.0.0.1", "10.0.0.0/8")
    assert load([], {"RANDOM_STREAM_TRUSTED_PROXIES": "::1"}).trusted_proxies == ("::1",)
    assert load([], {}).trusted_proxies == ()
    with pytest.raises(ConfigError, match="--trusted-proxies"):
        load(["--trusted-proxies", "nginx"], {})


def test_cross_site_handshakes_without_origin_are_refused(server_factory):
    """Fails on the old code: another site's <img src=/socket.io/...> opened a session."""
    server = server_factory()
    url = server.url + "/socket.io/?EIO=4&transport=polling"
    status, headers, body = http("GET", url, headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403 and b"Origin" in body and headers.get("x-content-type-options")
    assert http("GET", url, headers={"Sec-Fetch-Site": "same-site"})[0] == 403
    assert http("GET", url, headers={"Sec-Fetch-Site": "same-origin"})[0] == 200
    assert http("GET", url, headers={"Sec-Fetch-Site": "none"})[0] == 200
    assert http("GET", url)[0] == 200  # scripts and tools send no Sec-Fetch-Site
    # A cross-site request from an allowed origin is the Origin check's business.
    assert http("GET", url, headers={"Sec-Fetch-Site": "cross-site",
                                     "Origin": server.url})[0] == 200


# 6. The database file is deleted or replaced --------------------------------------------------

@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_swapped_database_file_is_noticed_and_seq_is_never_reused(server_factory, tmp_path,
                                                                    how):
    """Fails on the old code: /healthz stayed ok and the restart began again at seq 1."""
    db = tmp_path / "stream.sqlite3"
    server = server_factory("--interval", "0.1", db=str(db))
    deadline = time.monotonic() + 20
    while server.get("/healthz")[1]["last_seq"] < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    for suffix in ("", "-wal", "-shm"):
        path = str(db) + suffix
        if os.path.exists(path):
            os.unlink(path)
    if how == "replaced":
        db.write_bytes(b"")  # an empty file: SQLite takes it as an empty database
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, body = server.get("/healthz")
        if status == 503:
            break
        time.sleep(0.2)
    assert status == 503, body
    assert any("deleted or replaced" in p for p in body["problems"]), body
    assert server.log().count("deleted or replaced") == 1
    time.sleep(1)
    seen = server.get("/healthz")[1]["last_seq"]
    assert server.stop() == 0
    server.start()
    time.sleep(0.5)
    _, latest = server.get("/api/latest")
    assert latest["seq"] > seen, "seq continues after every seq handed out"
    assert server.get("/healthz")[0] == 200


# 11. Smaller items ---------------------------------------------------------------------------

@pytest.mark.parametrize("request_bytes, code", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"y" * 70000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 150 + b"\r\n", 431),
    (b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/1.1 junk\r\nHost: x\r\n\r\n", 400),
    (b"POST /api/latest HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
     400),
    (b"POST /api/latest HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /api/latest HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
])
def test_parser_refusals_carry_the_security_headers_and_no_version(shared_server,
                                                                   request_bytes, code):
    """Fails on the old code: eventlet's bare answers, a Python version, a second
    Content-Length taken as valid."""
    server = shared_server
    answer = raw_request(server.url, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % code), answer[:300]
    assert b"X-Content-Type-Options: nosniff" in head and b"Content-Security-Policy" in head
    assert b"Python" not in answer and b"BaseHTTP" not in answer
    assert body.startswith(b'{"error": ')


@pytest.mark.parametrize("accept, gzipped", [
    ("gzip;q=0", False), ("gzip, deflate", True), ("*;q=0", False), ("identity", False),
    ("deflate, gzip;q=0.5", True), ("*", True),
])
def test_gzip_only_when_the_client_accepts_it(client, accept, gzipped):
    """Fails on the old code for q=0: "gzip" appearing in the header was enough."""
    response = client.get("/", headers={"Accept-Encoding": accept})
    assert (response.headers.get("Content-Encoding") == "gzip") is gzipped


def test_the_nginx_example_replaces_a_clients_forwarded_headers():
    """Fails on the old code: a client's X-Forwarded-Host went through, and its
    X-Forwarded-For was extended rather than replaced."""
    conf = (__import__("conftest").ROOT / "docs/nginx/random_stream.conf").read_text()
    assert 'proxy_set_header X-Forwarded-Host ""' in conf
    assert "proxy_set_header X-Forwarded-For $remote_addr" in conf
    assert "$proxy_add_x_forwarded_for" not in conf
