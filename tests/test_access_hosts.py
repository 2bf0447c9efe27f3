"""Private dashboards under the other hosts (`flask run`, gunicorn) and scaled out on Redis.

Their request logs print every URL whole: `/?token=...` must come out redacted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT, free_port
from test_access import OTHER, QUOTED, TOKEN, WRONG, Client, bearer, fetch
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


@pytest.mark.parametrize("kind", ["flask run", "gunicorn"])
def test_a_token_with_quotes_stays_out_of_the_hosts_logs(host, kind):
    """Werkzeug decodes %27 and %22 before it logs a request line; gunicorn's error log
    quotes a malformed request line whole."""
    import socket
    from urllib.parse import quote

    port = free_port()
    if kind == "gunicorn":
        pytest.importorskip("gunicorn")
        command = gunicorn("-w", "1", "-k", "gevent", "--access-logfile", "-", port=port)
    else:
        command = flask_run(port=port)
    h = host(*command, port=port, env={"RANDOM_STREAM_ACCESS_TOKEN": QUOTED})
    link = fetch(h, f"/?token={quote(QUOTED)}&range=1h")  # as a browser sends it
    assert link.status == 303 and link.headers["Location"] == "/?range=1h"
    for line in (f"GET /?token={QUOTED} HTTP/1.1", f"GET\t/?token={QUOTED}\tHTTP/1.1"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"{line}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            while sock.recv(65536):
                pass
    time.sleep(0.5)  # the host's log lines are written after the answers
    log = h.log()
    assert "token=[redacted]" in log, log[-3000:]
    for secret in (QUOTED, quote(QUOTED), 'quoted"-token', "quoted%22-token"):
        assert secret not in log, log[-3000:]


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


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")
def test_nginx_logs_a_sign_in_link_without_its_token(server_factory, tmp_path):
    """docs/nginx/random_stream.conf as it is, but for its ports, upstream and log path."""
    server = server_factory("--interval", "0.2", "--trusted-proxies", "127.0.0.1",
                            env={"RANDOM_STREAM_ACCESS_TOKEN": TOKEN})
    port = free_port()
    site = (ROOT / "docs/nginx/random_stream.conf").read_text()
    site = re.sub(r"upstream random_stream \{.*?\n\}", "upstream random_stream { server "
                  f"127.0.0.1:{server.port}; }}", site, flags=re.S)
    site = site.replace("listen 8080;", f"listen 127.0.0.1:{port};").replace(
        "/var/log/nginx/random_stream.access.log", str(tmp_path / "access.log"))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"daemon off; worker_processes 1; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        "events { worker_connections 64; }\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}/body; "
        f"proxy_temp_path {tmp_path}/proxy; include {tmp_path}/site.conf; }}\n")
    nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proxy = SimpleNamespace(port=port, url=f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 10
        while True:
            try:
                fetch(proxy, "/healthz")
                break
            except OSError:
                assert nginx.poll() is None and time.monotonic() < deadline, nginx.stderr.read()
                time.sleep(0.1)
        link = fetch(proxy, f"/?range=1h&token={TOKEN}&x=1")
        assert link.status == 303 and link.headers["Location"] == "/?range=1h&x=1"
        session = link.session()
        assert fetch(proxy, "/", headers={"Cookie": session}).status == 200
        assert fetch(proxy, "/api/stats", headers=bearer()).status == 200  # passed on
        assert fetch(proxy, f"/?token={WRONG}&token={OTHER}").status == 401
    finally:
        nginx.terminate()
        nginx.wait(10)
    log = (tmp_path / "access.log").read_text()
    assert '"GET /?range=1h&token=[redacted]&x=1 HTTP/1.1" 303' in log, log
    assert '"GET /?token=[redacted]&token=[redacted] HTTP/1.1" 401' in log, log
    for secret in (TOKEN, WRONG, OTHER, session.split("=", 1)[1]):
        assert secret not in log
