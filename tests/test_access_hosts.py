"""Private dashboards under the other hosts (`flask run`, gunicorn) and scaled out on Redis.

Their request logs print every URL whole: `/?token=...` must come out redacted.
"""

from __future__ import annotations

import pytest
from conftest import free_port
from test_access import OTHER, TOKEN, WRONG, Client, bearer, fetch
from test_hosts import Host, flask_run, gunicorn

ENV = {"RANDOM_STREAM_INTERVAL": "0.1", "RANDOM_STREAM_DB": ":memory:", "PYTHONUNBUFFERED": "1",
       "RANDOM_STREAM_ACCESS_TOKEN": f"{TOKEN},{OTHER}"}


@pytest.fixture
def host(tmp_path):
    started: list[Host] = []

    def start(*command: str, port: int, env: dict | None = None) -> Host:
        started.append(Host(list(command), port, tmp_path / f"host-{len(started)}.log",
                            {**ENV, **(env or {})}))
        return started[-1].wait_until_answering()

    yield start
    for h in started:
        h.stop()


def signed_in_everywhere(h) -> str:
    """The link, the API, the page and both transports with the session and the token;
    the session cookie it got."""
    link = fetch(h, f"/?token={TOKEN}&range=1h")
    assert link.status == 303 and link.headers["Location"] == "/?range=1h"
    session = link.session()
    assert fetch(h, "/", headers={"Cookie": session}).status == 200
    assert fetch(h, "/api/stats", headers=bearer(OTHER)).status == 200
    assert fetch(h, "/api/stats").status == 401
    assert fetch(h, f"/?token={WRONG}").status == 401
    for transport, options in (("websocket", {"headers": {"Cookie": session}}),
                               ("polling", {"auth": {"token": OTHER}})):
        client = Client()
        assert client.connect(h, transport, **options), (transport, client.refusals)
        client.wait_for("random_number")
        client.close()
    refused = Client()
    assert not refused.connect(h, "websocket")
    assert refused.refusals == [{"message": "unauthorized"}]
    return session


def assert_log_redacted(h, session: str) -> None:
    log = h.log()
    assert "token=[redacted]" in log, log[-3000:]
    for secret in (TOKEN, OTHER, WRONG, session.split("=", 1)[1]):
        assert secret not in log


def test_flask_run_is_private_and_its_request_lines_hide_the_token(host):
    port = free_port()
    h = host(*flask_run(port=port), port=port)
    session = signed_in_everywhere(h)
    assert "GET /?token=[redacted]&range=1h HTTP/1.1" in h.log()  # (Werkzeug colours it)
    assert_log_redacted(h, session)


def test_gunicorns_access_log_hides_the_token(host):
    pytest.importorskip("gunicorn")
    port = free_port()
    h = host(*gunicorn("-w", "1", "-k", "gevent", "--access-logfile", "-", "--access-logformat",
                       '%(r)s %(s)s %(q)s cookie=%({cookie}i)s auth=%({authorization}i)s',
                       port=port), port=port)
    session = signed_in_everywhere(h)
    assert "GET /?token=[redacted]&range=1h HTTP/1.1 303 token=[redacted]&range=1h" in h.log()
    assert "cookie=[redacted]" in h.log() and "auth=[redacted]" in h.log()
    assert_log_redacted(h, session)


@pytest.mark.redis
def test_every_process_of_a_cluster_takes_the_others_sessions(server_factory, tmp_path):
    from test_scaleout import RedisServer  # skips without redis-server, as its tests do

    redis_server = RedisServer(tmp_path / "redis.log").start()
    try:
        servers = [server_factory("--interval", "0.2", "--message-queue", redis_server.url,
                                  db=None, env={"RANDOM_STREAM_ACCESS_TOKEN": TOKEN})
                   for _ in range(2)]
        session = fetch(servers[0], f"/?token={TOKEN}").session()
        assert fetch(servers[1], "/", headers={"Cookie": session}).status == 200
        assert fetch(servers[1], "/api/stats", headers={"Cookie": session}).status == 200
        client = Client()
        assert client.connect(servers[1], "websocket", headers={"Cookie": session})
        client.wait_for("random_number")
        client.close()
        back = fetch(servers[1], "/signin", "POST", {
            "Origin": servers[1].url, "Content-Type": "application/x-www-form-urlencoded"},
            f"token={TOKEN}".encode()).session()
        assert fetch(servers[0], "/api/latest", headers={"Cookie": back}).status in (200, 404)
    finally:
        redis_server.kill()
