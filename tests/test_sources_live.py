"""Pull, stdin and HTTP push sources on real server processes."""

from __future__ import annotations

import http.client as httpclient
import json
import math
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, ServerProcess, Viewer, free_port
from rawsocket import http

TOKEN = "s3cret-token-for-tests"
FLAKY = '''
import math
calls = 0
def read():
    global calls
    calls += 1
    step = calls % 6
    if step == 1:
        return "not a number"
    if step == 2:
        raise ValueError("sensor unplugged")
    if step == 3:
        return None
    if step == 4:
        return math.nan
    return calls + 0.25
'''


def wait_until(predicate, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(every)


def latest_seq(server) -> int:
    status, body = server.get("/api/latest")
    return body["seq"] if status == 200 else 0


# Pull -----------------------------------------------------------------------------------------

def test_a_pull_source_streams_floats(server_factory):
    server = server_factory("--interval", "0.1", "--source", "examples/loadavg.py:read")
    wait_until(lambda: latest_seq(server) >= 3)
    _, body = server.get("/api/history")
    assert all(isinstance(r["value"], (int, float)) and r["value"] >= 0 for r in body["readings"])
    _, stats = server.get("/api/stats")
    assert stats["kind"] == "observed" and stats["uniformity"] is None
    assert stats["chi_square"] is None and sum(stats["histogram"]["counts"]) >= 3
    _, health = server.get("/healthz")
    assert health["status"] == "ok" and health["source"]["kind"] == "pull"


def test_a_failing_pull_source_is_reported_once_per_kind_and_goes_on(server_factory, tmp_path):
    module = tmp_path / "flaky.py"
    module.write_text(FLAKY)
    server = server_factory("--interval", "0.05", "--source", f"{module}:read")
    wait_until(lambda: latest_seq(server) >= 6)  # 1 in 6 calls gives a reading
    _, body = server.get("/api/history")
    assert [r["seq"] for r in body["readings"]] == list(range(1, len(body["readings"]) + 1))
    assert all(r["value"] % 6 in (5.25, 0.25) for r in body["readings"])
    _, health = server.get("/healthz")
    errors = health["source"]["errors"]
    assert set(errors) == {"not_a_number", "raised ValueError", "not_finite"}
    assert all(count >= 2 for count in errors.values())
    assert health["status"] == "ok"
    _, metrics = server.get("/metrics")
    assert 'random_stream_source_errors_total{kind="raised ValueError"}' in metrics
    log = server.log()
    assert log.count("sensor unplugged") == 1  # logged once, counted after that
    assert log.count("returned 'not a number'") == 1
    assert "Traceback" not in log


@pytest.mark.parametrize("mode", ["eventlet", "gevent"])
def test_a_blocking_source_delays_no_ping_no_client_and_no_tick(server_factory, viewers, mode):
    # Fails with the call made on the event loop: the second client cannot connect.
    server = server_factory("--interval", "0.5", "--ping-interval", "1", "--ping-timeout", "1",
                            "--source", "examples/slow.py:read", "--async-mode", mode)
    first = viewers(server.url)
    # Within one 3 s call: the server answers HTTP and a new client gets its snapshot.
    busy = wait_until(lambda: server.get("/healthz")[1]["source"]["busy_for"])
    second = viewers(server.url)
    second.wait_for(lambda: second.histories)
    assert server.get("/healthz")[1]["source"]["busy_for"] is not None or busy
    first.wait_for(lambda: len(first.numbers) >= 3, timeout=30)
    # The engine.io client drops a server whose pings are late by over 1 s: still here.
    assert first.client.connected and second.client.connected
    stamps = [r["ts"] for r in first.numbers]
    assert all(b - a >= 2.9 for a, b in zip(stamps, stamps[1:]))  # one call at a time
    _, health = server.get("/healthz")
    assert health["source"]["skipped_ticks"] >= 3
    assert health["source"]["calls"] <= health["last_seq"] + 1  # a skipped tick starts nothing
    _, metrics = server.get("/metrics")
    assert "random_stream_source_skipped_ticks_total" in metrics


# stdin --------------------------------------------------------------------------------------

class PipedServer(ServerProcess):
    """The server with a real pipe on its standard input."""

    def start(self, timeout: float = 20.0):
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.PIPE)
        return self.wait_until_answering(timeout)

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()


@pytest.mark.parametrize("mode", ["eventlet", "gevent", "threading"])
def test_stdin_lines_become_readings(tmp_path, mode):
    server = PipedServer(("--source", "stdin", "--async-mode", mode), ":memory:",
                         tmp_path / "server.log", None).start()
    try:
        server.write(b"1\n2.5\nnot a number\n")
        server.write(b"x" * 10_000 + b"\n-3\n")
        wait_until(lambda: latest_seq(server) >= 3)
        _, body = server.get("/api/history")
        assert [(r["seq"], r["value"]) for r in body["readings"]] == [(1, 1), (2, 2.5), (3, -3)]
        _, health = server.get("/healthz")
        assert health["source"]["errors"] == {"not_a_number": 1, "too_long": 1}
        assert health["source"]["ended"] is False
        server.proc.stdin.close()
        wait_until(lambda: server.get("/healthz")[1]["source"]["ended"])
        status, health = server.get("/healthz")
        assert status == 200 and health["status"] == "ok"  # it keeps serving the history
        assert server.get("/api/history")[1]["readings"][-1]["value"] == -3
        assert server.stop() == 0
        assert "end of input after 5 line(s)" in server.log()
    finally:
        server.kill()


def test_a_fast_stdin_does_not_starve_the_server(tmp_path):
    """Fails without a turn per line: eventlet recorded the whole input before answering."""
    lines = 20_000
    server = PipedServer(("--source", "stdin"), ":memory:",
                         tmp_path / "server.log", None).start()
    try:
        server.write(b"".join(b"%d\n" % n for n in range(lines)))  # more than one pipe's worth
        wait_until(lambda: latest_seq(server) > 0)
        _, health = server.get("/healthz")  # answered while the input is being read
        assert health["last_seq"] < lines, "the server answered only once all of stdin was read"
        wait_until(lambda: latest_seq(server) == lines, timeout=120)
    finally:
        server.kill()


# HTTP push ------------------------------------------------------------------------------------

def post(server, body: bytes, token: str | None = TOKEN, scheme: str = "Bearer"):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    status, head, raw = http("POST", server.url + "/api/readings", body=body, headers=headers)
    return status, head, json.loads(raw)


@pytest.fixture
def push_server(server_factory):
    return server_factory("--source", "http", env={"RANDOM_STREAM_INGEST_TOKEN": TOKEN})


@pytest.fixture(scope="module")
def refusing_push_server(tmp_path_factory):
    """One push server for the tests whose pushes are all refused: each checks that the
    server still holds no reading, so none can hide behind another's."""
    log = tmp_path_factory.mktemp("refusing") / "server.log"
    server = ServerProcess(("--source", "http"), ":memory:", log,
                           {"RANDOM_STREAM_INGEST_TOKEN": TOKEN}).start()
    yield server
    server.kill()


def test_http_push_needs_the_token(push_server):
    for token, scheme in ((None, "Bearer"), ("wrong-token-wrong-token", "Bearer"),
                          (TOKEN[:-1], "Bearer"), (TOKEN, "Basic"), ("", "Bearer")):
        status, head, body = post(push_server, b'{"value": 1}', token, scheme)
        assert status == 401 and "Bearer" in body["error"]
        assert head["www-authenticate"].startswith("Bearer")
    assert latest_seq(push_server) == 0
    status, _, body = post(push_server, b'{"value": 1.5}')
    assert status == 201 and body["readings"][0]["value"] == 1.5
    assert push_server.log().count("without the right bearer token") == 1


def test_http_push_readings_reach_viewers(push_server, viewers):
    viewer = viewers(push_server.url)
    viewer.wait_for(lambda: viewer.histories)
    assert post(push_server, b'{"values": [3, 4.5, -1e-3]}')[0] == 201
    viewer.wait_for(lambda: len(viewer.numbers) == 3)
    assert viewer.readings() == [(1, 3), (2, 4.5), (3, -1e-3)]


@pytest.mark.parametrize("body, status", [
    (b"", 400), (b"{", 400), (b'{"value": "1"}', 400), (b'{"value": NaN}', 400),
    (b'{"values": []}', 400), (b'{"value": 1, "x": 2}', 400), (b"\xff", 400),
    (b'{"value": ' + b"1" * 400 + b"}", 400), (b" " * 20_000, 413),
])
def test_http_push_bad_bodies(refusing_push_server, body, status):
    got, _, answer = post(refusing_push_server, body)
    assert got == status and answer["error"]
    assert latest_seq(refusing_push_server) == 0
    assert "Traceback" not in refusing_push_server.log()


def test_http_push_flood_gets_429(push_server):
    host, port = push_server.url.removeprefix("http://").split(":")
    conn = httpclient.HTTPConnection(host, int(port), timeout=10)
    statuses = []
    for _ in range(400):  # bounded: far more than the burst of 100, at loopback speed
        conn.request("POST", "/api/readings", body=b'{"value": 1}',
                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
        if response.status == 429:
            assert response.getheader("Retry-After") == "1"
    conn.close()
    assert set(statuses) == {201, 429}
    assert statuses.count(201) == latest_seq(push_server)
    assert push_server.log().count("requests a second") == 1


def test_other_sources_have_no_ingest_route(server_factory):
    server = server_factory("--interval", "0.5")
    status, _, body = post(server, b'{"value": 1}')
    assert status in (404, 405) and body["error"]


# Refusals at start ------------------------------------------------------------------------------

def run_server(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "random_stream.py"), "--port", str(free_port()), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=30, env=env,
    )


def test_a_chunked_push_is_asked_for_its_length(refusing_push_server):
    """Fails before: a chunked body read as empty and got a misleading 400 "not JSON"."""
    host, port = refusing_push_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        body = b'{"value": 2}'
        sock.sendall(b"POST /api/readings HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 411"), answer[:200]
    assert b"Content-Length" in answer
    assert latest_seq(refusing_push_server) == 0


def test_http_source_refuses_to_start_without_a_token():
    done = run_server("--source", "http", "--db", ":memory:",
                      env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "random_stream: error: --source http needs --ingest-token (or "
        "RANDOM_STREAM_INGEST_TOKEN) of at least 16 characters"]


def test_a_database_refuses_another_source_kind(server_factory, tmp_path):
    db = str(tmp_path / "stream.sqlite3")
    server = server_factory("--interval", "0.05", db=db)
    wait_until(lambda: latest_seq(server) >= 2)
    assert server.stop() == 0
    done = run_server("--db", db, "--source", "examples/loadavg.py:read")
    assert done.returncode == 2
    assert "comes from --source random, not pull" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_pushed_ints_and_floats_keep_their_type_across_a_restart(server_factory, tmp_path):
    """Fails before: SQLite's `value INTEGER` column gave 3.0 back as 3 (and -0.0 as 0,
    2.0**53 as an int) once the readings came from the database, after a restart."""
    values = [7, 2.5, -0.0, 2**53, 2.0**53, 3.0]
    server = server_factory("--source", "http", db=str(tmp_path / "stream.sqlite3"),
                            env={"RANDOM_STREAM_INGEST_TOKEN": TOKEN})
    assert post(server, json.dumps({"values": values}).encode())[0] == 201
    assert server.stop() == 0
    server.start()

    def same(got):  # equal, and of the same type and sign: 3.0 is not 3, -0.0 not 0.0
        assert got == values
        assert [(type(v), math.copysign(1, v)) for v in got] == [
            (type(v), math.copysign(1, v)) for v in values]

    same([r["value"] for r in server.get("/api/history")[1]["readings"]])
    latest = server.get("/api/latest")[1]
    assert latest["value"] == 3.0 and isinstance(latest["value"], float)
    viewer = Viewer(server.url)
    try:
        viewer.wait_for(lambda: viewer.histories)
        same([r["value"] for r in viewer.histories[0]["readings"]])
    finally:
        viewer.close()
    _, csv_text = server.get("/api/history.csv")
    assert [line.split(",")[1] for line in csv_text.splitlines()[1:]] == [
        "7", "2.5", "-0.0", "9007199254740992", "9007199254740992.0", "3.0"]
