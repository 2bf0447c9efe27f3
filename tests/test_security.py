"""Hostile and broken clients against a real server: raw WebSocket and polling, by hand.

What crosses the wire is checked on the wire: invalid packets, oversized frames, floods,
clients that never join, foreign origins, the connection cap and the security headers.
The pure rules (limits.py: token bucket, frame, payload, message and request checks) are
tested directly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import websocket
from conftest import ServerProcess
from rawsocket import Polling, RawSocket, http

from randstream.headers import SECURITY_HEADERS
from randstream.limits import (
    EVENT_BURST,
    JOIN_TIMEOUT,
    STRIKES,
    ClientLimit,
    TokenBucket,
    body_length,
    event_problem,
    frame_is_packet,
    frame_problem,
    message_problem,
    polling_payload_error,
    query_problem,
    upgrade_problem,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the tests that only hurt their own connections."""
    log = tmp_path_factory.mktemp("security") / "server.log"
    process = ServerProcess(("--interval", "0.2", "--history", "20"), ":memory:", log, None)
    process.start()
    yield process
    process.kill()


@pytest.fixture
def raw(server):
    """Open raw WebSockets to the module's server; all closed after the test."""
    opened = []

    def open_socket(url=None, **kwargs):
        sock = RawSocket(url or server.url, **kwargs)
        opened.append(sock)
        return sock

    yield open_socket
    for sock in opened:
        sock.close()


def assert_quiet(server: ServerProcess) -> None:
    log = server.log()
    assert "Traceback" not in log, log[-3000:]


def assert_still_streaming(sock: RawSocket) -> None:
    first = sock.wait_event("random_number")["seq"]
    assert sock.wait_event("random_number")["seq"] > first


# The pure parts --------------------------------------------------------------------------

def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=2, capacity=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)  # one token per half second
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped


def test_client_limit_drops_then_disconnects_a_persistent_flood():
    limit = ClientLimit(now=0.0)
    verdicts = [limit.check(0.0) for _ in range(EVENT_BURST + STRIKES + 1)]
    assert verdicts[:EVENT_BURST] == ["ok"] * EVENT_BURST
    assert verdicts[EVENT_BURST:-1] == ["drop"] * STRIKES
    assert verdicts[-1] == "disconnect"


def test_a_client_at_the_rate_is_never_dropped():
    limit = ClientLimit(now=0.0, rate=10, burst=30)
    assert all(limit.check(i / 10) == "ok" for i in range(1000))


@pytest.mark.parametrize("frame", ["40", "42[\"resume\",{\"after\":1}]", "3", "2probe", "5", "1",
                                   b"\x00\x01", "bAAEC"])
def test_engineio_packets_pass_the_frame_check(frame):
    assert frame_is_packet(frame)


@pytest.mark.parametrize("frame", ["", "x", "9zz", "HTTP/1.1", "b!!!", "\u0663abc", "{}"])
def test_non_packets_fail_the_frame_check(frame):
    assert not frame_is_packet(frame)


@pytest.mark.parametrize("body", [b"garbage", b"\xff\xfe", b"9zz", b"0", b"2", b"6", b"b!!!",
                                  b"4\x1e", b"\x1e\x1e"])
def test_bad_polling_payloads_are_named(body):
    assert polling_payload_error(body)


@pytest.mark.parametrize("body", [b"40", b'42["resume",{"after":1}]', b"3", b"1", b"40\x1e3"])
def test_good_polling_payloads_pass(body):
    assert polling_payload_error(body) is None


def test_a_frame_that_is_no_packet_is_named_too_deep_or_bad():
    assert frame_problem("4" + "[" * 33) == "too_deep"
    assert frame_problem("x") == frame_problem(None) == "bad_packet"


# What engine.io's message event carries: the Socket.IO packet, without Engine.IO's "4".
@pytest.mark.parametrize("data", [b"\x01", "51-[\"resume\"]", "6"])
def test_binary_socketio_packets_are_refused_before_python_socketio(data):
    assert message_problem(data, ClientLimit(now=0.0)) == "binary"


def test_a_connection_joins_once():
    limit = ClientLimit(now=0.0)
    assert message_problem("0", limit) is None and limit.joined
    assert message_problem('2["resume",{"after":1}]', limit) is None
    assert message_problem("0/,", limit) == "rejoin"


def test_only_events_with_a_handler_pass():
    handled = {"resume"}.__contains__
    assert event_problem(["resume", {"after": 1}], handled) is None
    assert event_problem(["nope"], handled) == event_problem(["connect"], lambda n: True) \
        == event_problem([7], handled) == "unknown_event"
    assert event_problem({}, handled) == event_problem([], handled) == "bad_packet"


def test_request_rules_name_what_is_wrong():
    assert query_problem({"QUERY_STRING": "a=\xff"}) and query_problem({}) is None
    assert query_problem({"QUERY_STRING": "a=\u00e9".encode().decode("latin-1")}) is None
    assert upgrade_problem({"HTTP_UPGRADE": "websocket", "HTTP_SEC_WEBSOCKET_VERSION": "13"})
    assert upgrade_problem({"HTTP_UPGRADE": "WebSocket", "HTTP_SEC_WEBSOCKET_KEY": "k",
                            "HTTP_SEC_WEBSOCKET_VERSION": "13"}) is None
    assert upgrade_problem({}) is None
    assert [body_length({"CONTENT_LENGTH": v}) for v in ("12", "", "x")] == [12, 0, -1]


# Invalid packets over a raw WebSocket ---------------------------------------------------

@pytest.mark.parametrize("frame", [
    "xyz",                      # not an Engine.IO packet
    "",                         # empty frame
    "9zz",                      # unknown Engine.IO packet type
    "b!!!",                     # broken base64 binary
    "4",                        # empty Socket.IO packet
    "42[",                      # broken JSON
    '42{"after":1}',            # event that is not an array
    "42[]",                     # event without a name
    "4x",                       # unknown Socket.IO packet type
    b"\x00\x01\x02",            # binary with no binary event announced
])
def test_an_invalid_packet_closes_only_that_client_without_an_http_answer(server, raw, frame):
    bystander = raw()
    bystander.join()
    sock = raw()
    sock.join()
    sock.send(frame)
    assert sock.wait_closed(), f"{frame!r} did not close the connection"
    leftover = sock.leftover_bytes()
    assert b"HTTP/" not in leftover and b"Traceback" not in leftover, leftover[:200]
    assert_still_streaming(bystander)
    assert_quiet(server)


# ("40" again is no longer harmless: each join is a whole snapshot; see the second-join test.)
@pytest.mark.parametrize("frame", ["6", "3", '42["no_such_event",{"x":1}]', '42["connect"]',
                                   '42["disconnect"]', '421["resume",{"after":0}]'])
def test_harmless_odd_packets_change_nothing_and_keep_the_connection(server, raw, frame):
    sock = raw()
    sock.join()
    _, health = server.get("/healthz")
    for _ in range(3):
        sock.send(frame)
    assert_still_streaming(sock)
    _, after = server.get("/healthz")
    assert after["clients"] == health["clients"], "a client cannot move the client count"
    assert_quiet(server)


def test_unknown_events_get_no_answer(raw):
    sock = raw()
    sock.join()
    for name in ("nosuch", "history", "random_number", "error", "resume2"):
        sock.send(json.dumps([name, {"after": 0}]).join(["42", ""]))
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        sock.recv(0.2)
    assert {name for name, _ in sock.events} <= {"history", "random_number", "viewers"}
    assert sum(name == "history" for name, _ in sock.events) == 1, "only the snapshot on join"


def test_a_frame_over_64_kb_closes_only_that_client(server, raw):
    bystander = raw()
    bystander.join()
    sock = raw()
    sock.join()
    sock.send('42["resume",{"after":"' + "9" * 70_000 + '"}]')
    assert sock.wait_closed()
    assert b"HTTP/" not in sock.leftover_bytes()
    assert_still_streaming(bystander)
    assert server.get("/healthz")[0] == 200
    assert_quiet(server)


def test_a_frame_just_under_the_limit_is_an_ordinary_bad_resume(raw):
    sock = raw()
    sock.join()
    sock.send('42["resume",{"after":"' + "9" * 60_000 + '"}]')
    assert "whole number" in sock.wait_event("error")["message"]
    assert_still_streaming(sock)


# Invalid input over polling ---------------------------------------------------------------

@pytest.mark.parametrize("body", [b"garbage", b"\xff\xfe\xfd", b"9zz", b"0", b"6", b"b!!!"])
def test_an_invalid_polling_payload_gets_a_json_400_and_closes_the_session(server, body):
    client = Polling(server.url)
    status, headers, raw_body = client.post(body)  # would have hung or logged a traceback
    assert status == 400 and headers["content-type"] == "application/json"
    assert "error" in json.loads(raw_body)
    status, answer = client.poll()
    assert status == 400 or answer == b"1", "the session is closed"
    status, _, raw_body = client.post(b"40")
    assert status == 400 and b"Traceback" not in raw_body
    assert_quiet(server)


def test_a_polling_body_over_64_kb_is_refused_with_413(server):
    client = Polling(server.url)
    status, headers, body = client.post(b"4" + b"x" * 70_000)
    assert status == 413 and "65536" in json.loads(body)["error"]
    assert headers["content-type"] == "application/json"


def test_an_invalid_socketio_packet_over_polling_closes_the_session(server):
    client = Polling(server.url)
    assert client.post(b"40")[0] == 200
    assert client.post(b"42[")[0] == 200  # valid Engine.IO; the Socket.IO layer refuses it
    deadline = time.monotonic() + 10
    closed = False
    while not closed and time.monotonic() < deadline:
        status, body = client.poll()
        closed = status == 400 or body.endswith(b"1")
    assert closed
    assert_quiet(server)


def test_a_malformed_resume_over_polling_gets_an_error_event(server):
    client = Polling(server.url)
    assert client.post(b"40")[0] == 200
    client.poll()  # the CONNECT reply and the history snapshot
    assert client.post(b'42["resume",{"after":-1}]')[0] == 200
    body = b""
    deadline = time.monotonic() + 10
    while b'"error"' not in body and time.monotonic() < deadline:
        body += client.poll()[1]
    assert b'42["error",{"message":"resume: after must be a whole number >= 0"}]' in body


# Rate limit ---------------------------------------------------------------------------------

def test_a_flood_gets_one_error_then_a_disconnect_and_others_carry_on(server, raw):
    bystander = raw()
    bystander.join()
    sock = raw()
    sock.join()
    for _ in range(EVENT_BURST + STRIKES + 50):
        sock.send('42["resume",{"after":0}]')
    assert sock.wait_closed(), "a persistent flood is disconnected"
    names = [name for name, _ in sock.events]
    errors = [data["message"] for name, data in sock.events if name == "error"]
    # One for the rate; a client slow to read its answers may also get the one `resume`
    # error of live.MAX_WAITING_ANSWERS (a busy machine), never more.
    assert sum("too many messages" in e for e in errors) == 1, errors
    assert all("too many messages" in e or "not been read yet" in e for e in errors), errors
    assert len(errors) <= 2, errors
    assert names.count("history") <= 1 + EVENT_BURST, "at most the burst was served"
    assert_still_streaming(bystander)
    assert_quiet(server)


def test_a_second_join_on_one_connection_closes_it(raw):
    """Fails before: leaving and joining again got the whole snapshot each time, outside
    resume's limits (27 snapshots, 703 KB, for 54 two-byte messages)."""
    sock = raw()
    sock.join()
    sock.send("41")
    sock.send("40")
    assert sock.wait_closed(), "a second join closes the connection"
    assert [name for name, _ in sock.events].count("history") == 1


@pytest.mark.parametrize("rejoin", ["40/", "40/,", '40/,{"after":0}'])
def test_a_second_join_naming_the_default_namespace_closes_it(raw, rejoin):
    """Fails on the old code: the hooks took only "0" and "0{" for a join of "/", so a
    join spelled "0/," (python-socketio reads the same namespace) passed as often as the
    rate allowed; with the CONNECT's auth each one is a resume answer of the client's
    choosing, past live.MAX_WAITING_ANSWERS (the review: +69 MB RSS from 40 connections
    that do not read, in 35 s; the `resume` event under the same flood: +6 MB)."""
    sock = raw()
    sock.join()
    sock.send("41")
    sock.send(rejoin)
    assert sock.wait_closed(), "a second join closes the connection"
    assert [name for name, _ in sock.events].count("history") == 1


def test_an_upgrade_without_a_websocket_key_is_refused_before_engineio(server):
    """Fails before: eventlet answered with a 500 (a traceback in the log) after engine.io
    had opened a session, which held a slot until the join timeout."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
                     b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert b"Sec-WebSocket-Key" in answer
    assert "Traceback" not in server.log()


def test_a_client_within_the_rate_is_served_every_time(raw):
    sock = raw()
    sock.join()
    for _ in range(EVENT_BURST // 2):
        sock.send('42["resume",{"after":0}]')
    for _ in range(EVENT_BURST // 2):
        sock.wait_event("history")
    assert not [data for name, data in sock.events if name == "error"]


# Never-joining clients ----------------------------------------------------------------------
# Each case waits out the server's JOIN_TIMEOUT. They run side by side, in threads started
# by the first test that asks for them, and each test reads its own case's outcome: the
# timeout is waited once (~7 s) instead of four times (~24 s).

def websocket_never_joins(url: str) -> tuple[bool, float, list]:
    sock = RawSocket(url)
    try:
        opened = time.monotonic()
        closed = sock.wait_closed(timeout=JOIN_TIMEOUT + 10)
        return closed, time.monotonic() - opened, sock.events
    finally:
        sock.close()


def websocket_joins_and_stays(url: str) -> None:
    sock = RawSocket(url)
    try:
        sock.join()
        time.sleep(JOIN_TIMEOUT + 2)
        assert_still_streaming(sock)
    finally:
        sock.close()


def websocket_joins_and_leaves(url: str) -> bool:
    sock = RawSocket(url)
    try:
        sock.join()
        sock.send("41")
        return sock.wait_closed(timeout=JOIN_TIMEOUT + 10)
    finally:
        sock.close()


def polling_never_joins(url: str) -> tuple[int, bytes, float]:
    client = Polling(url)
    opened = time.monotonic()
    status, body = client.poll(timeout=JOIN_TIMEOUT + 10)
    return status, body, time.monotonic() - opened


@pytest.fixture(scope="module")
def join_timeout_cases(server):
    cases = (websocket_never_joins, websocket_joins_and_stays, websocket_joins_and_leaves,
             polling_never_joins)
    with ThreadPoolExecutor(len(cases)) as pool:
        yield {case: pool.submit(case, server.url) for case in cases}


def test_a_websocket_that_never_joins_is_closed_after_the_join_timeout(join_timeout_cases):
    closed, waited, events = join_timeout_cases[websocket_never_joins].result()
    assert closed
    assert waited >= JOIN_TIMEOUT - 1, f"closed after {waited:.1f}s, before the timeout"
    assert not events


def test_a_joined_client_outlives_the_join_timeout(join_timeout_cases):
    join_timeout_cases[websocket_joins_and_stays].result()  # its assertions, raised here


def test_a_client_that_leaves_the_namespace_is_closed_after_the_timeout(join_timeout_cases):
    assert join_timeout_cases[websocket_joins_and_leaves].result()


def test_a_polling_client_that_never_joins_is_closed(join_timeout_cases):
    status, body, waited = join_timeout_cases[polling_never_joins].result()
    assert (status, body) == (200, b"1"), "the long poll ends with an Engine.IO CLOSE"
    assert waited >= JOIN_TIMEOUT - 1


# Origins ------------------------------------------------------------------------------------

def test_a_foreign_origin_is_refused_on_polling_and_websocket(server):
    client = Polling(server.url, origin="http://evil.example")
    assert client.status == 403 and client.sid is None
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        RawSocket(server.url, origin="http://evil.example")
    assert refused.value.status_code == 403


def test_the_same_origin_is_accepted_on_polling_and_websocket(server, raw):
    assert Polling(server.url, origin=server.url).status == 200
    raw(origin=server.url).join()


def test_cors_origins_allow_listed_origins_only(server_factory):
    server = server_factory("--cors-origins", "https://dash.example,https://ops.example")
    for origin in ("https://dash.example", "https://ops.example", server.url):
        assert Polling(server.url, origin=origin).status == 200, origin
        sock = RawSocket(server.url, origin=origin)
        sock.join()
        sock.close()
    for origin in ("https://evil.example", "http://dash.example", "null"):
        assert Polling(server.url, origin=origin).status == 403, origin
        with pytest.raises(websocket.WebSocketBadStatusException):
            RawSocket(server.url, origin=origin)


# Connection cap -----------------------------------------------------------------------------

def test_past_the_connection_cap_a_handshake_gets_503_and_a_slot_frees_on_close(server_factory):
    server = server_factory("--max-connections", "2")
    first, second = RawSocket(server.url), RawSocket(server.url)
    first.join()
    second.join()
    status, headers, body = http("GET", server.url + "/socket.io/?EIO=4&transport=polling")
    assert status == 503 and headers["retry-after"].isdigit()
    assert "connection limit" in json.loads(body)["error"]
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        RawSocket(server.url)
    assert refused.value.status_code == 503
    assert server.get("/healthz")[0] == 200, "HTTP routes stay open at the cap"
    assert_still_streaming(first)
    second.close()
    deadline = time.monotonic() + 10
    while len_open(server) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    third = RawSocket(server.url)
    third.join()
    first.close()
    third.close()
    assert server.log().count("at the connection cap") == 1, "one line per episode"


def len_open(server: ServerProcess) -> int:
    _, _, body = http("GET", server.url + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("random_stream_open_connections "):
            return int(float(line.split()[1]))
    raise AssertionError("no random_stream_open_connections gauge")


# Headers --------------------------------------------------------------------------------------

def test_security_headers_on_every_kind_of_response_on_the_wire(server):
    requests = [
        ("GET", "/"), ("GET", "/api/latest"), ("GET", "/api/history?limit=bad"),
        ("GET", "/api/nope"), ("GET", "/nope"), ("POST", "/api/latest"), ("DELETE", "/"),
        ("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/static/js/dashboard.js"),
        ("GET", "/socket.io/?EIO=4&transport=polling"),  # Engine.IO handshake
        ("GET", "/socket.io/?EIO=3&transport=polling"),  # Engine.IO's own 400
        ("GET", "/socket.io/?EIO=4&transport=polling&sid=nope"),
        ("OPTIONS", "/socket.io/?EIO=4&transport=polling"),
    ]
    for method, path in requests:
        status, headers, body = http(method, server.url + path)
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name.lower()) == value, (method, path, status, name)
        assert b"Traceback" not in body
    status, headers, _ = http("GET", server.url + "/socket.io/?EIO=4&transport=polling",
                              headers={"Origin": "http://evil.example"})
    assert status == 403 and headers["x-frame-options"] == "DENY"


def test_csp_forbids_inline_script_and_the_page_has_none(server):
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and "unsafe" not in csp
    assert directives["frame-ancestors"] == "'none'"
    _, _, page = http("GET", server.url + "/")
    html = page.decode()
    scripts = html.split("<script")[1:]
    assert scripts, "the page loads its script"
    for tag in scripts:
        assert tag.split(">", 1)[0].count("src=") == 1, "every script is a file"
        assert tag.split(">", 1)[1].startswith("</script>"), "no inline script body"
    assert " onclick=" not in html and " onload=" not in html and "javascript:" not in html


def test_the_one_inline_stylesheet_is_admitted_by_its_hash_alone(server):
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    sources = directives["style-src"].split()
    assert "'unsafe-inline'" not in sources
    _, _, page = http("GET", server.url + "/")
    styles = page.decode().split("<style>")[1:]
    assert len(styles) == 1 and " style=" not in page.decode()
    digest = base64.b64encode(hashlib.sha256(styles[0].split("</style>")[0].encode()).digest())
    assert sources == ["'self'", f"'sha256-{digest.decode()}'"]


def test_a_500_is_json_without_a_traceback_and_has_the_headers(app):
    def boom():
        raise RuntimeError("secret detail /etc/passwd")

    app.add_url_rule("/api/boom", "boom", boom)
    app.config["TESTING"] = False  # a real 500, not the exception re-raised into the test
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get("/api/boom")
    assert response.status_code == 500 and response.is_json
    assert response.get_json() == {"error": "internal server error"}
    assert b"secret" not in response.data and b"Traceback" not in response.data
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value


def test_the_join_timeout_leaves_the_readings_alone(server, raw):
    """After all of the above the stream itself is whole: seqs are consecutive."""
    sock = raw()
    history = sock.join()["readings"]
    seqs = [r["seq"] for r in history]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert_quiet(server)


def test_a_query_string_that_is_not_utf8_gets_a_json_400_on_the_wire(server):
    for query in (b"\x80", b"after=\xff&limit=1", b"limit=\xc3"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            conn.sendall(b"GET /api/history?" + query + b" HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), head
        assert json.loads(body)["error"]  # the servers decode the request line differently
    assert_quiet(server)


def test_a_binary_event_cannot_fire_the_servers_own_handlers(server, raw):
    watcher = raw()
    watcher.join()
    sock = raw()
    sock.join()
    _, before = server.get("/healthz")
    sock.send('451-["disconnect",{"_placeholder":true,"num":0}]')
    sock.send(b"\x01\x02")
    sock.wait_closed(timeout=3)  # dropping the event orphans its attachment: that closes it
    sock.close()
    deadline = time.monotonic() + 10
    while (server.get("/healthz")[1]["clients"] != before["clients"] - 1
           and time.monotonic() < deadline):
        time.sleep(0.1)
    assert server.get("/healthz")[1]["clients"] == before["clients"] - 1
    assert_still_streaming(watcher)


def test_an_exception_inside_engineio_becomes_a_json_500_without_details(app, monkeypatch, caplog):
    eio = app.extensions["socketio"].server.eio

    def broken(environ, start_response):
        raise KeyError("Session is disconnected /secret/path")

    monkeypatch.setattr(eio, "handle_request", broken)
    response = app.test_client().get("/socket.io/?EIO=4&transport=polling")
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal server error"}
    assert b"secret" not in response.data
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert sum("request failed" in r.getMessage() for r in caplog.records) == 1
