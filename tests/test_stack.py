"""The WSGI stack (randstream/stack.py): its layers in order, the one error boundary,
the security headers, and admission's counts, through plain WSGI calls."""

from __future__ import annotations

import json
import logging

import pytest
from flask_socketio import SocketIO
from werkzeug.test import EnvironBuilder

from random_stream import create_app
from randstream.admission import Admission
from randstream.counters import Counters
from randstream.headers import SECURITY_HEADERS
from randstream.live import origin_policy
from randstream.stack import (
    Admit,
    Answering,
    ErrorBoundary,
    SecurityHeaders,
    Unbuffered,
)


def layers(wsgi_app) -> list[str]:
    names = []
    while True:
        names.append(type(wsgi_app).__name__)
        if not hasattr(wsgi_app, "app"):
            return names
        wsgi_app = wsgi_app.app


def call(wsgi_app, path="/", **environ):
    """(status, headers, body) of one request, the iterable closed as a server would."""
    env = EnvironBuilder(path=path).get_environ()
    env.update(environ)
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer.update(status=status, headers=dict(headers))

    chunks = wsgi_app(env, start_response)
    try:
        body = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    return answer["status"], answer["headers"], body


def test_the_stack_is_built_once_outermost_first(app):
    assert layers(app.wsgi_app) == ["ErrorBoundary", "SecurityHeaders", "Admit", "Answering",
                                    "Unbuffered", "_SocketIOMiddleware"]
    assert isinstance(app.extensions["socketio"], SocketIO)


def test_a_wsgi_hosts_ticker_starts_with_its_first_request(monkeypatch, tmp_path):
    monkeypatch.setenv("RANDOM_STREAM_DB", str(tmp_path / "host.sqlite3"))
    monkeypatch.delenv("RANDOM_STREAM_ASYNC_MODE", raising=False)
    app = create_app()
    stream = app.extensions["stream"]
    try:
        assert layers(app.wsgi_app) == ["ErrorBoundary", "SecurityHeaders", "Admit", "Answering",
                                        "HostLimits", "StartOnFirstRequest", "Unbuffered",
                                        "_SocketIOMiddleware"]
        assert stream.started_at is None
        assert call(app.wsgi_app, "/healthz")[0].startswith(("200", "503"))
        assert stream.started_at is not None
    finally:
        stream.stop()
        stream.close()


def failing(exc: Exception, start_first: bool = False):
    def wsgi_app(environ, start_response):
        if start_first:
            start_response("200 OK", [("Content-Type", "text/plain")])
        raise exc

    return wsgi_app


def test_a_failure_before_the_answer_is_a_json_500_with_the_headers(caplog):
    status, headers, body = call(ErrorBoundary(failing(KeyError("secret /path"))), "/socket.io/")
    assert status == "500 Internal Server Error"
    assert json.loads(body) == {"error": "internal server error"} and b"secret" not in body
    assert all(headers[name] == value for name, value in SECURITY_HEADERS.items())
    (record,) = [r for r in caplog.records if "request failed" in r.getMessage()]
    assert record.getMessage() == "request failed: GET /socket.io/" and record.exc_info


def test_each_kind_of_failure_is_logged_once_a_minute(caplog):
    boundary = ErrorBoundary(failing(ValueError("x")))
    for _ in range(5):
        assert call(boundary, "/a")[0].startswith("500")
    call(boundary, "/b")
    messages = [r.getMessage() for r in caplog.records if "request failed" in r.getMessage()]
    assert messages == ["request failed: GET /a", "request failed: GET /b"]
    boundary.seen[("ValueError", "GET /a")] -= 60  # a minute later
    call(boundary, "/a")
    assert caplog.records[-1].getMessage() == "request failed again: GET /a (ValueError: x)"
    assert caplog.records[-1].exc_info is None


@pytest.mark.parametrize("server_logs", [False, True])
@pytest.mark.parametrize("environ", [{}, {"HTTP_UPGRADE": "websocket"}])
def test_too_late_for_an_answer_the_failure_goes_on_to_the_server(caplog, environ, server_logs):
    start_first = not environ  # an answer begun, or a WebSocket that owns the socket
    boundary = ErrorBoundary(failing(RuntimeError("late"), start_first=start_first),
                             log_passed_on=not server_logs)
    with pytest.raises(RuntimeError):
        call(boundary, "/socket.io/", **environ)
    # Logged once: here, or by the server that gets it (never both).
    assert sum("request failed" in r.getMessage() for r in caplog.records) == (not server_logs)


def test_a_client_gone_mid_answer_is_not_logged(caplog):
    with pytest.raises(BrokenPipeError):
        call(ErrorBoundary(failing(BrokenPipeError())))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_security_headers_keep_what_a_response_sets_itself():
    def framed(environ, start_response):
        start_response("200 OK", [("X-Frame-Options", "SAMEORIGIN")])
        return [b""]

    _, headers, _ = call(SecurityHeaders(framed))
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    assert headers["Referrer-Policy"] == SECURITY_HEADERS["Referrer-Policy"]


def test_the_event_stream_is_unbuffered_on_the_servers_own_environ(app):
    env = EnvironBuilder(path="/api/stream").get_environ()
    chunks = app.wsgi_app(env, lambda status, headers, exc_info=None: None)
    try:
        assert next(iter(chunks)).startswith(b"retry:")
        assert env["eventlet.minimum_write_chunk_size"] == 0
        assert app.extensions["stream"].counters.open_connections == 1, "held until closed"
    finally:
        chunks.close()
    assert app.extensions["stream"].counters.open_connections == 0


def test_only_the_event_stream_is_unbuffered():
    seen = []

    def inner(environ, start_response):
        seen.append(environ.get("eventlet.minimum_write_chunk_size"))
        start_response("200 OK", [])
        return [b""]

    call(Unbuffered(inner, "/api/stream"), "/api/history")
    call(Unbuffered(inner, "/api/stream"), "/api/stream")
    assert seen == [None, 0]


def test_admission_counts_what_it_holds_and_refuses_past_the_cap():
    counters = Counters(max_connections=2)
    admission = Admission(counters, origin_policy(()), max_per_address=1)
    first = EnvironBuilder(environ_base={"REMOTE_ADDR": "10.0.0.1"}).get_environ()
    second = EnvironBuilder(environ_base={"REMOTE_ADDR": "10.0.0.2"}).get_environ()
    assert admission.hold(first) is None and admission.hold(second) is None
    assert counters.open_connections == 2
    third = EnvironBuilder(environ_base={"REMOTE_ADDR": "10.0.0.3"}).get_environ()
    assert admission.hold(third)[0] == "503 Service Unavailable"
    admission.release(second)
    again = EnvironBuilder(environ_base={"REMOTE_ADDR": "10.0.0.1"}).get_environ()
    assert admission.hold(again)[0] == "429 Too Many Requests"  # one per address
    foreign = EnvironBuilder(headers={"Origin": "https://elsewhere.example"}).get_environ()
    assert admission.hold(foreign) == ("403 Forbidden", "origin not allowed")
    assert counters.refused == {"max_connections": 1, "per_address": 1, "origin": 1}
    assert counters.open_connections == 1 and admission.per_address == {"10.0.0.1": 1}


def test_admit_refuses_as_json_before_the_app_runs():
    ran = []

    def inner(environ, start_response):
        ran.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"ok"]

    counters = Counters(max_connections=0)
    admit = Admit(inner, Admission(counters, origin_policy(())), lambda environ, sid: None,
                  "/socket.io/")
    status, headers, body = call(admit, "/socket.io/", QUERY_STRING="EIO=4&transport=polling")
    assert status == "503 Service Unavailable" and headers["Retry-After"] == "5"
    assert json.loads(body)["error"].startswith("server is at its connection limit (0)")
    assert call(admit, "/api/latest", QUERY_STRING="a=\xff")[0] == "400 Bad Request"
    assert call(admit, "/api/latest")[2] == b"ok" and ran == ["/api/latest"]


def test_plain_answers_in_progress_are_capped_and_counted_until_closed():
    def inner(environ, start_response):
        start_response("200 OK", [])
        if environ["PATH_INFO"] == "/stream":
            return iter([b"a", b"b"])  # no length: the server must not size it
        return [b"ok"]

    def start(environ_path):
        env = EnvironBuilder(path=environ_path).get_environ()
        return answering(env, lambda status, headers, exc_info=None: statuses.append(status))

    counters = Counters(max_connections=10)
    answering = Answering(inner, counters, ("/socket.io/", "/api/stream"), limit=2)
    statuses = []
    first, second = start("/"), start("/stream")
    assert len(first) == 1 and not hasattr(second, "__len__")
    assert answering.answering == 2
    third = start("/api/latest")
    assert statuses[-1] == "503 Service Unavailable" and b"busy" in b"".join(third)
    for exempt in ("/healthz", "/metrics", "/socket.io/", "/api/stream"):
        start(exempt)
        assert statuses[-1] == "200 OK", exempt
    assert list(second) == [b"a", b"b"]
    second.close()
    second.close()  # counted once
    assert answering.answering == 1
    start("/api/latest")  # dropped unclosed, as werkzeug's test client leaves its bodies
    assert statuses[-1] == "200 OK"
    del first
    assert answering.answering == 0
    assert counters.refused == {"busy": 1}


def test_one_address_holds_at_most_its_share_of_plain_answers():
    def inner(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    def start(address):
        env = EnvironBuilder(path="/", environ_base={"REMOTE_ADDR": address}).get_environ()
        return answering(env, lambda status, headers, exc_info=None: statuses.append(status))

    counters = Counters(max_connections=10)
    answering = Answering(inner, counters, ("/socket.io/",), address=lambda e: e["REMOTE_ADDR"],
                          limit=3, per_address=2)
    statuses = []
    held = [start("10.0.0.1"), start("10.0.0.1")]
    start("10.0.0.1")
    assert statuses[-1] == "503 Service Unavailable"
    other = start("10.0.0.2")
    assert statuses[-1] == "200 OK"
    held.pop().close()
    assert answering.by_address == {"10.0.0.1": 1, "10.0.0.2": 1}
    other.close()
    held.pop().close()
    assert answering.by_address == {} and answering.answering == 0
    assert counters.refused == {"busy_per_address": 1}
