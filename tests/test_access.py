"""Private dashboards (--access-token): real servers, real clients, every way to the readings.

Each server trusts 127.0.0.2 as a proxy: a request sent from 127.0.0.2 with X-Forwarded-For
counts for the address it names, so one test can be several clients (the wrong-token limit
is per address) and a proxy that says the request came over HTTPS.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import time

import pytest
import socketio
import websocket
from conftest import ROOT
from rawsocket import Polling

from randstream.access import LIFETIME, Tokens

TOKEN = "correct-horse-battery-staple"
OTHER = "a-second-token-for-rotation"
WRONG = "not-the-token-at-all-really"
PROXY = "127.0.0.2"  # --trusted-proxies of every server here


class Answer:
    """One HTTP answer: status, headers, body, nothing followed."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self):
        return json.loads(self.body)

    @property
    def cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []

    def session(self) -> str:
        """The session cookie it sets, as a Cookie header's `name=value`."""
        (cookie,) = self.cookies
        pair = cookie.split(";")[0]
        assert pair.startswith("random_stream_session=") and len(pair) > 30, cookie
        return pair


def fetch(server, path: str, method: str = "GET", headers: dict | None = None,
          body: bytes | None = None, via_proxy_for: str | None = None, https: bool = False,
          timeout: float = 10.0) -> Answer:
    """A request to `server`; `via_proxy_for`: sent from the trusted proxy for that client
    address (`https`: the proxy says the client used HTTPS)."""
    headers = dict(headers or {})
    source = None
    if via_proxy_for is not None:
        source = (PROXY, 0)
        headers["X-Forwarded-For"] = via_proxy_for
        headers["X-Forwarded-Proto"] = "https" if https else "http"
    elif https:
        headers["X-Forwarded-Proto"] = "https"  # from 127.0.0.1: not a trusted proxy
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout,
                                      source_address=source)
    try:
        conn.request(method, path, body=body, headers=headers)
        return Answer(conn.getresponse())
    finally:
        conn.close()


def bearer(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def form(token: str, keep: str = "") -> bytes:
    from urllib.parse import urlencode
    return urlencode({"token": token, "keep": keep}).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def private(server_factory):
    """private(*args, tokens=...): a server with --access-token (from the environment, as
    the README advises), trusting PROXY."""
    def start(*args: str, tokens: str = TOKEN, env: dict | None = None, **kwargs):
        return server_factory("--interval", "0.2", "--trusted-proxies", PROXY, *args,
                              env={"RANDOM_STREAM_ACCESS_TOKEN": tokens, **(env or {})}, **kwargs)
    return start


def wait_for_reading(server) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = fetch(server, "/api/latest", headers=bearer())
        if answer.status == 200:
            return answer.json()
        time.sleep(0.1)
    raise AssertionError("no reading within 10 s")


PROTECTED = ["/", "/api/latest", "/api/history", "/api/history.csv", "/api/stats",
             "/api/series", "/api/stream", "/metrics", "/api/viewers", "/api/anything-new",
             "/no-such-page"]


# ---- without a credential ----------------------------------------------------------------


def test_without_a_credential_nothing_of_the_stream_is_served(private):
    server = private()
    reading = wait_for_reading(server)
    page = fetch(server, "/")
    assert page.status == 401 and page.headers["Content-Type"].startswith("text/html")
    assert 'id="token"' in page.text and 'action="/signin"' in page.text
    for leak in ('id="current-value"', "data-stream", reading["stream"]["id"], "random_number",
                 "/static/js/"):
        assert leak not in page.text, leak
    for path in PROTECTED[1:]:
        answer = fetch(server, path)
        assert answer.status == 401, (path, answer.status)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer"), path
        assert "private" in answer.json()["error"], path
    # What carries no reading stays open: the sign-in form's CSS, the favicon.
    assert fetch(server, "/static/css/signin.css").status == 200
    assert fetch(server, "/static/css/dashboard.css").status == 200
    assert fetch(server, "/signin").status == 200


def test_healthz_says_its_status_alone_without_a_credential(private):
    server = private()
    wait_for_reading(server)
    bare = fetch(server, "/healthz")
    assert bare.status == 200 and bare.json() == {"status": "ok"}
    full = fetch(server, "/healthz", headers=bearer())
    assert full.status == 200 and full.json()["status"] == "ok"
    assert {"last_seq", "clients", "source", "problems"} <= set(full.json())


def test_the_event_stream_needs_a_credential(private):
    server = private()
    wait_for_reading(server)
    assert fetch(server, "/api/stream").status == 401
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/api/stream?after=0", headers=bearer())
        response = conn.getresponse()
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        seen = b""
        while seen.count(b"event: reading") < 2:
            seen += response.read1(4096)
    finally:
        conn.close()


# ---- bearer tokens ---------------------------------------------------------------------------


def test_a_bearer_token_opens_the_api_and_metrics(private):
    server = private(tokens=f"{TOKEN},{OTHER}")
    reading = wait_for_reading(server)
    for token in (TOKEN, OTHER):
        latest = fetch(server, "/api/latest", headers=bearer(token))
        assert latest.status == 200 and latest.json()["seq"] >= reading["seq"]
        assert latest.headers["Cache-Control"] == "private"  # no shared cache keeps it
        metrics = fetch(server, "/metrics", headers=bearer(token))
        assert metrics.status == 200 and "random_stream_ticks_total" in metrics.text
        page = fetch(server, "/", headers=bearer(token))
        assert page.status == 200 and 'id="current-value"' in page.text
    wrong = fetch(server, "/api/latest", headers=bearer(WRONG))
    assert wrong.status == 401 and wrong.json() == {"error": "the token is not right"}
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    # Another scheme (a proxy's Basic) is no token of ours: no credential, not a wrong one.
    basic = fetch(server, "/api/latest", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status == 401 and "private" in basic.json()["error"]
    assert 'random_stream_rejected_inputs_total{reason="wrong_token"} 1.0\n' in fetch(
        server, "/metrics", headers=bearer()).text


# ---- the link and the cookie -----------------------------------------------------------------


def test_a_link_trades_the_token_for_a_session_cookie_and_drops_it_from_the_address(private):
    server = private()
    wait_for_reading(server)
    link = fetch(server, f"/?range=7d&token={TOKEN}&from=1",
                 headers={"Sec-Fetch-Site": "cross-site"})  # from a mail or a chat
    assert link.status == 303
    assert link.headers["Location"] == "/?range=7d&from=1"
    assert link.headers["Cache-Control"] == "no-store"
    (cookie,) = link.cookies
    attributes = [part.strip() for part in cookie.split(";")]
    assert {"HttpOnly", "SameSite=Lax", "Path=/", f"Max-Age={LIFETIME}"} <= set(attributes)
    assert "Secure" not in attributes  # plain HTTP, no proxy
    assert TOKEN not in cookie
    session = link.session()
    page = fetch(server, "/?range=7d", headers={"Cookie": session})
    assert page.status == 200 and 'id="current-value"' in page.text
    assert 'action="/signout"' in page.text  # the way out, on a private dashboard
    assert fetch(server, "/api/stats", headers={"Cookie": session}).status == 200
    # Another cookie beside it is fine; a wrong link is the form with its error.
    assert fetch(server, "/api/latest", headers={"Cookie": f"a=b; {session}; c=d"}).status == 200
    wrong = fetch(server, f"/?token={WRONG}")
    assert wrong.status == 401 and "not right" in wrong.text and not wrong.cookies


def test_the_cookie_is_secure_over_https_through_a_trusted_proxy_only(private):
    server = private()
    trusted = fetch(server, f"/?token={TOKEN}", via_proxy_for="198.51.100.7", https=True)
    assert trusted.status == 303 and "Secure" in [p.strip() for p in trusted.cookies[0].split(";")]
    untrusted = fetch(server, f"/?token={TOKEN}", https=True)  # X-Forwarded-Proto from anyone
    assert untrusted.status == 303 and "Secure" not in untrusted.cookies[0]
    plain = fetch(server, f"/?token={TOKEN}", via_proxy_for="198.51.100.7")
    assert plain.status == 303 and "Secure" not in plain.cookies[0]


def test_a_bad_expired_or_forged_session_counts_as_none_and_is_cleared(private):
    server = private()
    tokens = Tokens((TOKEN,))
    now = time.time()
    good = tokens.sign(0, now)
    expired = tokens.sign(0, now - LIFETIME - 1)
    ahead = tokens.sign(0, now + 3600)  # issued an hour from now: no clock is that wrong
    fingerprint, issued, expires, mac = good.split(".")[1:]
    stretched = f"1.{fingerprint}.{issued}.{int(expires) + 86_400}.{mac}"  # its MAC is for the old
    forged = f"1.{fingerprint}.{issued}.{expires}.{mac[:-2]}AA"
    unknown = Tokens((OTHER,)).sign(0, now)  # signed for a token this server has not
    assert fetch(server, "/api/latest", headers={"Cookie": f"random_stream_session={good}"}
                 ).status in (200, 404)
    for session in (expired, ahead, stretched, forged, unknown, "garbage", "1.2.3.4.5", "é"):
        for path in ("/", "/api/latest"):
            answer = fetch(server, path, headers={"Cookie": f"random_stream_session={session}"})
            assert answer.status == 401, (session, path)
            (cleared,) = answer.cookies
            assert cleared.startswith("random_stream_session=;") and "Max-Age=0" in cleared


# ---- the form --------------------------------------------------------------------------------


def test_the_sign_in_form_signs_in_and_says_what_went_wrong(private):
    server = private()
    page = fetch(server, "/signin")
    assert page.status == 200
    assert '<label for="token">' in page.text and 'autocomplete="off"' in page.text
    assert 'role="alert"' not in page.text
    origin = {"Origin": server.url, **FORM}
    wrong = fetch(server, "/signin", "POST", origin, form(WRONG, "range=1h"))
    assert wrong.status == 401 and not wrong.cookies
    assert 'role="alert"' in wrong.text and "not right" in wrong.text
    assert 'aria-invalid="true"' in wrong.text and 'value="range=1h"' in wrong.text
    good = fetch(server, "/signin", "POST", origin, form(TOKEN, "range=1h&token=x"))
    assert good.status == 303 and good.headers["Location"] == "/?range=1h"
    assert fetch(server, "/", headers={"Cookie": good.session()}).status == 200
    # The page refused without a session keeps its view for after the sign-in.
    refused = fetch(server, "/?range=6h")
    assert refused.status == 401 and 'name="keep" value="range=6h"' in refused.text


def test_sign_in_and_out_refuse_another_sites_posts(private):
    server = private()
    session = fetch(server, f"/?token={TOKEN}").session()
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": server.url, "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null", "Sec-Fetch-Site": "cross-site"}):
        signin = fetch(server, "/signin", "POST", {**headers, **FORM}, form(TOKEN))
        assert signin.status == 403 and not signin.cookies, headers
        signout = fetch(server, "/signout", "POST", {**headers, "Cookie": session, **FORM}, b"")
        assert signout.status == 403 and not signout.cookies, headers
    assert fetch(server, "/", headers={"Cookie": session}).status == 200
    # What a browser sends from the page itself (no-referrer: Origin null), and a script.
    for headers in ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, {"Origin": server.url},
                    {}):
        signin = fetch(server, "/signin", "POST", {**headers, **FORM}, form(TOKEN))
        assert signin.status == 303 and signin.cookies, headers


def test_sign_out_clears_the_cookie_and_goes_back_to_the_form(private):
    server = private()
    session = fetch(server, f"/?token={TOKEN}").session()
    out = fetch(server, "/signout", "POST", {"Origin": server.url, "Cookie": session, **FORM}, b"")
    assert out.status == 303 and out.headers["Location"] == "/signin"
    (cleared,) = out.cookies
    assert cleared.startswith("random_stream_session=;") and "Max-Age=0" in cleared
    assert fetch(server, "/signout").status == 405  # a GET (a prefetch, an <img>) signs no one out


# ---- wrong tokens ----------------------------------------------------------------------------


def test_a_link_fetched_by_another_page_tries_no_token(private):
    """Another site's page can make its visitors' browsers fetch links (<img>, <script>,
    <iframe>): with wrong tokens in them it would lock everyone at a visitor's address out
    of signing in. Only a link that is opened is tried."""
    server = private()
    for i in range(12):
        for dest in ("image", "script", "iframe", "empty"):
            answer = fetch(server, f"/?token={WRONG}{i}", headers={
                "Sec-Fetch-Dest": dest, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "cross-site"})
            assert answer.status == 403 and not answer.cookies, (dest, answer.status)
        assert fetch(server, f"/signin?token={WRONG}{i}",
                     headers={"Sec-Fetch-Dest": "image"}).status == 403
    assert fetch(server, f"/?token={TOKEN}", headers={"Sec-Fetch-Dest": "image"}).status == 403
    # Not one wrong token was counted: the address signs in, by link, bearer or form.
    opened = {"Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate",
              "Sec-Fetch-Site": "cross-site"}  # a link in a mail, opened
    assert fetch(server, f"/?token={TOKEN}", headers=opened).status == 303
    assert fetch(server, f"/?token={WRONG}", headers=opened).status == 401
    assert fetch(server, "/api/stats", headers=bearer()).status == 200
    metrics = fetch(server, "/metrics", headers=bearer()).text
    assert 'random_stream_rejected_inputs_total{reason="wrong_token"} 1.0' in metrics, metrics


def test_wrong_tokens_are_limited_per_address(private):
    server = private()
    attacker, someone = "203.0.113.5", "203.0.113.6"
    for i in range(10):  # bearer, link and form alike count
        kind = i % 3
        if kind == 0:
            answer = fetch(server, "/api/latest", headers=bearer(f"{WRONG}{i}"),
                           via_proxy_for=attacker)
        elif kind == 1:
            answer = fetch(server, f"/?token={WRONG}{i}", via_proxy_for=attacker)
        else:
            answer = fetch(server, "/signin", "POST", {"Origin": server.url, **FORM},
                           form(f"{WRONG}{i}"), via_proxy_for=attacker)
        assert answer.status == 401, (i, answer.status)
    limited = fetch(server, "/api/latest", headers=bearer(WRONG), via_proxy_for=attacker)
    assert limited.status == 429 and 1 <= int(limited.headers["Retry-After"]) <= 10
    assert "too many wrong tokens" in limited.json()["error"]
    # Past the limit even the right token waits: no guess is checked.
    right = fetch(server, "/api/latest", headers=bearer(), via_proxy_for=attacker)
    assert right.status == 429
    page = fetch(server, "/signin", "POST", {"Origin": server.url, **FORM}, form(TOKEN),
                 via_proxy_for=attacker)
    assert page.status == 429 and "Try again in" in page.text and page.headers["Retry-After"]
    assert not page.cookies
    # Another address is not affected.
    assert fetch(server, "/api/stats", headers=bearer(), via_proxy_for=someone).status == 200
    metrics = fetch(server, "/metrics", headers=bearer()).text
    assert 'random_stream_rejected_inputs_total{reason="wrong_token"} 10.0' in metrics, metrics
    assert re.search(r'random_stream_refused_connections_total\{reason="wrong_tokens"\} [1-9]',
                     metrics), metrics
    log = server.log()
    assert log.count("refused a wrong access token from 203.0.113.5") == 1
    assert log.count("more than 10 wrong ones a minute") == 1


# ---- Socket.IO -------------------------------------------------------------------------------


class Client:
    """A python-socketio client that records what it gets and how it was refused."""

    def __init__(self) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.got: list[str] = []
        self.refusals: list[dict] = []
        self.sio.on("history", lambda data: self.got.append("history"))
        self.sio.on("random_number", lambda data: self.got.append("random_number"))
        self.sio.on("connect_error", lambda data: self.refusals.append(data))

    def connect(self, server, transport: str, **options) -> bool:
        try:
            self.sio.connect(server.url, transports=[transport], wait_timeout=5, **options)
        except socketio.exceptions.ConnectionError:
            return False
        return True

    def wait_for(self, event: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while event not in self.got:
            assert time.monotonic() < deadline, (event, self.got)
            time.sleep(0.05)

    def close(self) -> None:
        self.sio.disconnect()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_socket_io_clients_need_a_credential(private, transport):
    server = private(tokens=f"{TOKEN},{OTHER}")
    session = fetch(server, f"/?token={TOKEN}").session()
    refused = []
    for options in ({}, {"auth": {"token": WRONG}}, {"auth": {"after": 0}},
                    {"auth": {"token": 12345678901234567}},
                    {"headers": {"Cookie": "random_stream_session=1.x.1.2.y"}}):
        client = Client()
        assert not client.connect(server, transport, **options), options
        time.sleep(0.5)
        assert client.refusals == [{"message": "unauthorized"}], options
        refused.append(client)
    for options in ({"auth": {"token": TOKEN}}, {"auth": {"token": OTHER, "after": 0}},
                    {"headers": {"Cookie": session}}, {"headers": bearer(OTHER)}):
        client = Client()
        assert client.connect(server, transport, **options), (options, client.refusals)
        client.wait_for("history")
        client.wait_for("random_number")
        client.close()
    for client in refused:  # nothing of the stream ever reached them
        assert client.got == []


def test_a_refused_connect_gets_no_packet_of_the_stream_and_is_closed(private):
    server = private()
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
        timeout=10, suppress_origin=True)
    try:
        assert ws.recv().startswith("0")  # the Engine.IO session opens...
        ws.send("40" + json.dumps({"token": WRONG, "after": 0}))
        frames = []
        while True:  # ...until its CONNECT is answered with CONNECT_ERROR and a close
            try:
                frame = ws.recv()
            except websocket.WebSocketConnectionClosedException:
                break
            if not frame:
                break
            frames.append(frame)
        assert frames[0] == '44{"message":"unauthorized"}', frames
        assert frames[1:] in ([], ["1"]), frames
    finally:
        ws.close()
    # Over polling the answer waits for the next poll; the join timeout closes the session.
    polling = Polling(server.url)
    assert polling.status == 200
    assert polling.post(b"40")[0] == 200
    status, body = polling.poll()
    assert status == 200 and body.startswith(b'44{"message":"unauthorized"}'), body
    assert b"42" not in body
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, body = polling.poll()
        if status != 200 or body.endswith(b"1"):
            break
    assert status != 200 or body.endswith(b"1"), (status, body)
    assert b"history" not in body and b"random_number" not in body


def test_a_page_on_another_allowed_origin_joins_with_the_token_in_its_auth(private):
    """A browser on a --cors-origins site sends the Origin and none of our cookies
    (SameSite=Lax): the token in the CONNECT's auth is its way in."""
    server = private("--cors-origins", "https://other.example")
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"

    def join(auth: dict) -> list[str]:
        ws = websocket.create_connection(url, timeout=10, origin="https://other.example")
        frames = []
        try:
            assert ws.recv().startswith("0")
            ws.send("40" + json.dumps(auth))
            while len(frames) < 2:
                frame = ws.recv()
                if not frame or frame == "1":
                    break
                frames.append(frame)
        except websocket.WebSocketConnectionClosedException:
            pass
        finally:
            ws.close()
        return frames

    joined = join({"token": TOKEN, "after": 0})
    assert joined[0].startswith('40{"sid":') and joined[1].startswith('42["history"'), joined
    assert join({"after": 0}) == ['44{"message":"unauthorized"}']
    with pytest.raises(websocket.WebSocketBadStatusException):  # a foreign origin, as before
        websocket.create_connection(url, timeout=10, origin="https://evil.example")


def test_a_viewers_cookie_opens_nothing_to_a_page_that_only_cors_star_lets_in(private):
    """A page on another port of this host is the same site: the browser sends it the
    viewer's cookie. `--cors-origins *` lets its handshake in, but the cookie counts only
    for the page's own origin and the origins named: that page must bring the token."""
    server = private("--cors-origins", "https://named.example,*")
    session = fetch(server, f"/?token={TOKEN}").session()
    other = "http://127.0.0.1:1"  # another port of this host
    assert fetch(server, "/api/stats", headers={"Cookie": session, "Origin": other}).status == 401
    for origin in (server.url, "https://named.example"):
        assert fetch(server, "/api/stats", headers={"Cookie": session, "Origin": origin}).status == 200

    def join(origin: str, auth: dict | None = None) -> str:
        """The answer to a CONNECT over WebSocket with the viewer's cookie (python-socketio's
        client sends its own Origin besides one passed to it)."""
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket", timeout=10,
            origin=origin, header=[f"Cookie: {session}"])
        try:
            assert ws.recv().startswith("0")
            ws.send("40" + (json.dumps(auth) if auth else ""))
            return ws.recv()
        finally:
            ws.close()

    assert join(other) == '44{"message":"unauthorized"}'
    assert join(other, {"token": TOKEN}).startswith('40{"sid":')
    assert join("https://named.example").startswith('40{"sid":')
    assert join(server.url).startswith('40{"sid":')
    refused = Client()  # over polling
    assert not refused.connect(server, "polling", headers={"Cookie": session, "Origin": other})
    assert refused.refusals == [{"message": "unauthorized"}] and refused.got == []


def test_wrong_connect_tokens_are_limited_too(private):
    server = private()

    def refusal(token: str) -> dict:
        """The CONNECT_ERROR a CONNECT with `token` gets, over a bare WebSocket (python-socketio's
        client, refused, sometimes takes 30 s to close: the limit would refill meanwhile)."""
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket", timeout=10,
            suppress_origin=True)
        try:
            assert ws.recv().startswith("0")
            ws.send("40" + json.dumps({"token": token}))
            answer = ws.recv()
        finally:
            ws.close()
        assert answer.startswith("44"), answer
        return json.loads(answer[2:])

    for i in range(10):
        assert refusal(f"{WRONG}{i}") == {"message": "unauthorized"}, i
    limited = refusal(f"{WRONG}10")
    assert limited == {"message": "too many wrong tokens from this address",
                       "data": {"retry_after": limited["data"]["retry_after"]}}
    assert 1 <= limited["data"]["retry_after"] <= 6
    # The same address's HTTP tries wait too; another address does not.
    assert fetch(server, "/api/latest", headers=bearer()).status == 429
    assert fetch(server, "/api/stats", headers=bearer(), via_proxy_for="192.0.2.9").status == 200


def npm_client() -> list[str]:
    node = shutil.which("node")
    if node is None or not (ROOT / "tests/npm_client/node_modules/socket.io-client").is_dir():
        pytest.skip("socket.io-client is not installed (tests/run installs it with npm)")
    return [node, str(ROOT / "tests/npm_client/private.mjs")]


def test_the_official_client_sends_its_token_in_the_connects_auth(private):
    command = npm_client()
    server = private()

    def run(*token: str) -> dict:
        result = subprocess.run([*command, server.url, "3", *token], capture_output=True,
                                text=True, timeout=60, check=False, cwd=ROOT / "tests/npm_client")
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    allowed = run(TOKEN)
    assert allowed["connected"] and allowed["histories"] == 1 and allowed["readings"] >= 5, allowed
    assert allowed["errors"] == []
    refused = run()
    assert refused == {"connected": False, "histories": 0, "readings": 0,
                       "errors": ["unauthorized"]}, refused
    assert run(WRONG)["errors"] == ["unauthorized"]


# ---- rotation, restarts ----------------------------------------------------------------------


def test_rotation_and_a_restart_without_a_token_refuse_its_sessions(private):
    server = private(tokens=f"{TOKEN},{OTHER}")
    old = fetch(server, f"/?token={TOKEN}").session()
    new = fetch(server, f"/?token={OTHER}").session()
    assert old != new
    for session in (old, new):
        assert fetch(server, "/", headers={"Cookie": session}).status == 200
    server.stop()
    server.env["RANDOM_STREAM_ACCESS_TOKEN"] = OTHER  # TOKEN retired
    server.start()
    assert fetch(server, "/api/stats", headers={"Cookie": new}).status == 200
    refused = fetch(server, "/api/stats", headers={"Cookie": old})
    assert refused.status == 401 and "Max-Age=0" in refused.cookies[0]
    assert fetch(server, "/api/stats", headers=bearer(TOKEN)).status == 401
    client = Client()
    assert not client.connect(server, "websocket", headers={"Cookie": old})
    assert client.refusals == [{"message": "unauthorized"}]


# ---- other parts are as they were --------------------------------------------------------------


def test_the_ingest_route_keeps_its_own_token(private):
    ingest = "an-ingest-token-of-its-own"
    server = private("--source", "http", env={"RANDOM_STREAM_INGEST_TOKEN": ingest})
    posted = fetch(server, "/api/readings", "POST",
                   {"Authorization": f"Bearer {ingest}", "Content-Type": "application/json"},
                   b'{"value": 4.5}')
    assert posted.status == 201, posted.text
    assert fetch(server, "/api/latest").status == 401
    assert fetch(server, "/api/latest", headers=bearer()).json()["value"] == 4.5
    # The access token is no ingest token, and the ingest token opens nothing else.
    assert fetch(server, "/api/readings", "POST",
                 {**bearer(), "Content-Type": "application/json"}, b'{"value": 1}').status == 401
    assert fetch(server, "/api/latest", headers=bearer(ingest)).status == 401


def test_no_log_line_shows_a_token_or_a_cookie(private):
    server = private(tokens=f"{TOKEN},{OTHER}")
    wait_for_reading(server)
    session = fetch(server, f"/?token={TOKEN}&range=1h").session()
    fetch(server, f"/?token={WRONG}")
    fetch(server, "/signin", "POST", {"Origin": server.url, **FORM}, form(OTHER))
    fetch(server, "/signin", "POST", {"Origin": server.url, **FORM}, form(WRONG))
    fetch(server, "/api/latest", headers=bearer(WRONG))
    fetch(server, "/api/latest", headers={"Cookie": session})
    fetch(server, "/api/latest", headers={"Cookie": "random_stream_session=1.a.1.2.b"})
    for options in ({"auth": {"token": OTHER}}, {"auth": {"token": WRONG}},
                    {"headers": {"Cookie": session}}):
        client = Client()
        if client.connect(server, "websocket", **options):
            client.close()
    server.stop()
    log = server.log()
    assert "refused a wrong access token" in log  # the log was written to
    for secret in (TOKEN, OTHER, WRONG, session.split("=", 1)[1]):
        assert secret not in log


QUOTED = """it's-a-"quoted"-token"""  # printable ASCII: quotes are allowed in a token


def test_no_log_line_shows_a_token_with_quotes_nor_a_malformed_request_line(private):
    """gevent's server logs a malformed request line whole (the token in it), and a token
    may hold quotes, which end no URL in a log line."""
    import socket
    from urllib.parse import quote

    server = private(tokens=QUOTED, env={"RANDOM_STREAM_ASYNC_MODE": "gevent"})
    assert fetch(server, f"/?token={quote(QUOTED)}").status == 303  # as a browser sends it
    for line in (f"GET /?token={QUOTED} HTTP/1.1",  # as curl sends it
                 f"GET /?token={QUOTED} HTTP/1.1 extra", f"GET /?token={QUOTED} HTTP/2.0"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"{line}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            while sock.recv(65536):
                pass
    server.stop()
    log = server.log()
    assert "Invalid HTTP method" in log, log  # it was written to
    for secret in (QUOTED, quote(QUOTED), 'quoted"-token', "quoted%22-token"):
        assert secret not in log
    assert "token=[redacted]" in log


def test_default_is_public_and_has_no_sign_in(server_factory):
    server = server_factory("--interval", "0.2")
    assert fetch(server, "/signin").status == 404
    page = fetch(server, "/")
    assert page.status == 200 and 'id="current-value"' in page.text
    assert 'action="/signout"' not in page.text and not page.cookies
    assert "Cache-Control" not in page.headers
    assert fetch(server, "/api/stats").status == 200
    client = Client()
    assert client.connect(server, "websocket", auth={"token": "anything-at-all-here"})
    client.wait_for("history")
    client.close()


# ---- configuration -----------------------------------------------------------------------------


def test_tokens_come_from_the_flag_or_the_environment_comma_separated():
    from randstream.config import load

    assert load([], {}).access_token == ()
    assert load([], {"RANDOM_STREAM_ACCESS_TOKEN": ""}).access_token == ()
    env = {"RANDOM_STREAM_ACCESS_TOKEN": f" {TOKEN} , {OTHER},{TOKEN}"}
    assert load([], env).access_token == (TOKEN, OTHER)
    assert load(["--access-token", OTHER], env).access_token == (OTHER,)
    assert TOKEN not in repr(load([], env))  # never in a repr, a traceback's locals, a log


@pytest.mark.parametrize("tokens, message", [
    ("short-token", "token 1 is not one"),
    (f"{TOKEN},short", "token 2 is not one"),
    (f"{TOKEN},{'é' * 20}", "token 2 is not one"),
    ("x" * 513, "token 1 is not one"),
    (", ,", "holds no token"),
])
def test_bad_tokens_stop_the_server_with_one_line_that_does_not_show_them(tokens, message):
    from test_config import assert_one_clear_line, run_cli

    result = run_cli("--access-token", tokens, "--db", ":memory:")
    assert result.returncode == 2
    assert_one_clear_line(result, message)
    for part in tokens.split(","):
        if len(part.strip()) > 3:
            assert part.strip() not in result.stderr


def test_the_access_token_may_not_be_the_ingest_token():
    from test_config import assert_one_clear_line, run_cli

    result = run_cli("--source", "http", "--ingest-token", TOKEN, "--access-token",
                     f"{OTHER},{TOKEN}", "--db", ":memory:")
    assert_one_clear_line(result, "--access-token must differ from --ingest-token (token 2")
    assert TOKEN not in result.stderr


def test_without_tokens_no_guard_is_built(app, stream):
    """The default path: no layer in the stack, no CONNECT check, no sign-in route."""
    layer, names = app.wsgi_app, []
    while layer is not None:
        names.append(type(layer).__name__)
        layer = getattr(layer, "app", None)
    assert "Guard" not in names and "Admit" in names, names
    assert stream.access is None and stream.hooks.credentials is None
    assert "access" not in app.blueprints


@pytest.mark.parametrize("path", [
    "/static/../api/latest", "/static/%2e%2e/api/latest", "/signin/../api/latest",
    "/signout/../metrics", "/socket.io/../api/latest", "/socket.iox/../api/latest",
    "//api/latest", "/./api/latest", "/healthz/../api/latest", "http://x/api/latest"])
def test_no_open_path_leads_to_the_readings(private, path):
    """The paths that need no credential (static files, sign-in, Engine.IO, /healthz) are
    matched by prefix: none of them, walked out of, reaches a route with readings."""
    import socket

    server = private()
    wait_for_reading(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    assert status in (400, 401, 404), (path, data[:200])
    assert b'"seq"' not in data and b"random_stream_ticks_total" not in data


def test_a_flood_of_addresses_costs_a_bounded_table():
    from randstream.access import ADDRESS_TABLE, WrongTokens

    clock = [0.0]
    wrong = WrongTokens(clock=lambda: clock[0])
    for _ in range(10):
        wrong.failed("198.51.100.1")
    assert wrong.retry_after("198.51.100.1") == pytest.approx(6.0)
    for i in range(3 * ADDRESS_TABLE):
        wrong.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(wrong.buckets) == ADDRESS_TABLE
    assert wrong.retry_after("198.51.100.1") == 0  # the oldest forgotten first
    for _ in range(10):  # a newcomer is limited as any, the table full or not
        wrong.failed("203.0.113.9")
    assert wrong.retry_after("203.0.113.9") == pytest.approx(6.0)
    assert len(wrong.buckets) == ADDRESS_TABLE
    clock[0] += 6.0
    assert wrong.retry_after("203.0.113.9") == 0  # one more try after 6 s: 10 a minute


@pytest.mark.parametrize("line, expected", [
    ('"GET /?token=abc HTTP/1.1" 303', '"GET /?token=[redacted] HTTP/1.1" 303'),
    ('"GET /?range=7d&token=abc&x=1 HTTP/1.1"', '"GET /?range=7d&token=[redacted]&x=1 HTTP/1.1"'),
    ('"GET /?%74oken=abc HTTP/1.1"', '"GET /?%74oken=[redacted] HTTP/1.1"'),
    ('"GET /?tokens=abc&atoken=b HTTP/1.1"', '"GET /?tokens=abc&atoken=b HTTP/1.1"'),
    ("no url here", "no url here"),
    # A token may hold quotes: the value runs to the next blank.
    ("""\"GET /?token=it's-a-"quoted"-one&x=1 HTTP/1.1" 303""",
     '"GET /?token=[redacted]&x=1 HTTP/1.1" 303'),
    # gunicorn and gevent quote a malformed request line whole, its token too.
    ("Invalid HTTP request line: 'GET\\t/?token=abc\\tHTTP/1.1'",
     "Invalid HTTP request line: 'GET\\t/?token=[redacted]"),
])
def test_redaction_of_log_lines(line, expected):
    from randstream.redaction import redact

    assert redact(line) == expected
