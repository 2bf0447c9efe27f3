"""Presence: the viewer count (`viewers`, /api/viewers, /metrics, the page), on real servers.

Viewers are Socket.IO clients that joined and open GET /api/stream responses, each once;
scaled out, every process's, through a real Redis. The count is broadcast at most once a
period (presence.period_for: the interval, at least 1 s) and only when it changed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import socketio
from conftest import in_async_mode
from test_fanout import metric

from randstream.presence import MIN_DROP, drop_after, period_for

INTERVAL = 0.2
PERIOD = period_for(INTERVAL)  # 1 s


class Watcher:
    """A python-socketio client that records every `viewers` count, and the order of events."""

    def __init__(self, url: str, transports=("websocket",), **options) -> None:
        self.client = socketio.Client(reconnection=False)
        self.counts: list[tuple[float, int]] = []  # (monotonic time, count)
        self.names: list[str] = []
        self.changed = threading.Condition()
        self.client.on("viewers", lambda data: self._record("viewers", data["count"]))
        self.client.on("history", lambda data: self._record("history", None))
        self.client.connect(url, transports=list(transports), wait_timeout=10, **options)

    def _record(self, name: str, count: int | None) -> None:
        with self.changed:
            self.names.append(name)
            if count is not None:
                self.counts.append((time.monotonic(), count))
            self.changed.notify_all()

    def wait_count(self, count: int, timeout: float = 15.0) -> None:
        with self.changed:
            assert self.changed.wait_for(
                lambda: self.counts and self.counts[-1][1] == count, timeout
            ), f"the count did not become {count}: {self.seen()}"

    def seen(self, since: float = 0.0) -> list[int]:
        with self.changed:
            return [count for at, count in self.counts if at >= since]

    def close(self) -> None:
        self.client.disconnect()


@pytest.fixture
def watchers():
    opened: list[Watcher] = []

    def open_watcher(url: str, **kwargs) -> Watcher:
        opened.append(Watcher(url, **kwargs))
        return opened[-1]

    yield open_watcher
    for watcher in opened:
        watcher.close()


# ---- one process, in process and over the wire -------------------------------------------


def test_the_period_and_the_drop_time():
    assert period_for(0.05) == 1.0 and period_for(1.0) == 1.0 and period_for(5.0) == 5.0
    assert drop_after(1.0) == MIN_DROP == 10.0 and drop_after(5.0) == 15.0


def test_a_joining_client_gets_the_count_after_its_history_then_changes_only(app, stream):
    socketio_ = app.extensions["socketio"]
    a = socketio_.test_client(app)
    assert [(e["name"], e["args"]) for e in a.get_received()][1:] == [("viewers", [{"count": 1}])]
    b = socketio_.test_client(app)
    assert b.get_received()[-1]["args"] == [{"count": 2}], "the count includes the new viewer"
    assert a.get_received() == [], "nothing is broadcast per join"
    stream.presence.beat()  # what the task does once a period
    assert [e["args"] for e in a.get_received()] == [[{"count": 2}]]
    assert [e["args"] for e in b.get_received()] == [[{"count": 2}]]
    stream.presence.beat()
    assert a.get_received() == [] and b.get_received() == [], "no change, no broadcast"
    b.disconnect()
    stream.presence.beat()
    assert [e["args"] for e in a.get_received()] == [[{"count": 1}]]
    assert stream.presence.broadcasts == 2


def test_the_joining_packet_is_encoded_once_per_count(app, stream):
    presence = stream.presence
    first = presence.greeting()
    assert presence.greeting() is first
    client = app.extensions["socketio"].test_client(app)
    assert presence.greeting() is not first
    client.disconnect()
    assert presence.greeting() is first


@pytest.fixture(params=[None, "threading"], ids=["suite-mode", "threading"])
def any_mode_server(request, server_factory):
    start = server_factory if request.param is None else in_async_mode(server_factory, request.param)
    return start("--interval", str(INTERVAL))


def test_viewers_count_on_connect_and_change_on_join_and_leave(any_mode_server, watchers):
    server = any_mode_server
    a = watchers(server.url)
    a.wait_count(1)
    assert a.names[:2] == ["history", "viewers"], "the count comes right after the snapshot"
    b = watchers(server.url)
    b.wait_count(2)
    assert b.seen()[0] == 2, "a new viewer's count includes itself"
    a.wait_count(2)
    assert server.get("/api/viewers") == (200, {"count": 2, "processes": 1})
    b.close()
    a.wait_count(1)
    assert server.get("/api/viewers") == (200, {"count": 1, "processes": 1})
    assert server.get("/api/viewers?x=1")[0] == 400
    assert metric(server, "random_stream_viewers") == 1
    assert metric(server, "random_stream_cluster_viewers") == 1
    assert metric(server, "random_stream_cluster_processes") == 1


def test_no_viewers_event_while_nobody_joins_or_leaves(server_factory, watchers):
    server = server_factory("--interval", "0.05")  # 20 ticks a second: nothing per tick
    a = watchers(server.url)
    time.sleep(2 * PERIOD)  # the broadcast of the join, if it has not come yet
    sent = metric(server, "random_stream_viewers_broadcasts_total")
    since = time.monotonic()
    time.sleep(4 * PERIOD)
    assert a.seen(since) == []
    assert metric(server, "random_stream_viewers_broadcasts_total") == sent


def test_a_burst_of_joins_is_one_broadcast_a_period(server_factory, watchers):
    server = server_factory("--interval", str(INTERVAL))
    a = watchers(server.url)
    a.wait_count(1)
    time.sleep(2 * PERIOD)
    since = time.monotonic()
    sent = metric(server, "random_stream_viewers_broadcasts_total")
    with ThreadPoolExecutor(25) as pool:
        herd = list(pool.map(lambda _: Watcher(server.url), range(50)))
    try:
        a.wait_count(51)
        took = time.monotonic() - since
        heard = a.seen(since)
        # One a period at most (the joins took `took` seconds), and the last one right.
        assert len(heard) <= took / PERIOD + 2, (heard, took)
        assert heard[-1] == 51
        broadcasts = metric(server, "random_stream_viewers_broadcasts_total") - sent
        assert broadcasts <= took / PERIOD + 2, (broadcasts, took)
        joined = [w.seen()[0] for w in herd]
        assert all(2 <= n <= 51 for n in joined) and max(joined) == 51, joined
        for w in herd:
            w.wait_count(51)
    finally:
        for w in herd:
            w.close()
    a.wait_count(1)


def test_sse_readers_are_viewers(server_factory, watchers):
    from test_sse import SseReader

    server = server_factory("--interval", str(INTERVAL))
    a = watchers(server.url)
    a.wait_count(1)
    readers = [SseReader(server.url) for _ in range(2)]
    for reader in readers:
        reader.next_event()
    a.wait_count(3)
    assert server.get("/api/viewers")[1]["count"] == 3
    assert metric(server, "random_stream_viewers") == 3
    for reader in readers:
        reader.close()
    a.wait_count(1)


def test_a_polling_client_that_upgrades_counts_once(server_factory, watchers):
    server = server_factory("--interval", str(INTERVAL))
    polling = watchers(server.url, transports=("polling", "websocket"))
    polling.wait_count(1)
    deadline = time.monotonic() + 10
    while polling.client.transport() != "websocket" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert polling.client.transport() == "websocket"
    time.sleep(2 * PERIOD)
    assert set(polling.seen()) == {1}
    assert server.get("/api/viewers")[1]["count"] == 1
    a = watchers(server.url)
    a.wait_count(2)
    polling.wait_count(2)


def test_socket_io_client_from_npm_gets_the_count(server_factory, watchers):
    from test_protocol_abuse import NPM_CLIENT, npm_client

    command = npm_client()
    server = server_factory("--interval", str(INTERVAL))
    a = watchers(server.url)
    a.wait_count(1)
    npm = subprocess.Popen([*command, server.url, "4"], stdout=subprocess.PIPE, text=True,
                           cwd=NPM_CLIENT)
    try:
        a.wait_count(2)
        a.close()
        out, _ = npm.communicate(timeout=30)
    finally:
        if npm.poll() is None:
            npm.kill()
            npm.wait()
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["connected"] and outcome["readings"] > 5, outcome
    assert outcome["viewers"][0] == 2 and outcome["viewers"][-1] == 1, outcome


def test_connections_refused_for_want_of_a_token_are_never_viewers(server_factory, watchers):
    """A private dashboard refuses a CONNECT without a credential before it joins, and an
    event stream with a 401: neither is counted, not even for a moment."""
    from rawsocket import Polling
    from test_sse import SseReader

    token = "correct-horse-battery-staple"
    server = server_factory("--interval", str(INTERVAL), env={"RANDOM_STREAM_ACCESS_TOKEN": token})
    a = watchers(server.url, auth={"token": token})
    a.wait_count(1)
    time.sleep(2 * PERIOD)  # the broadcast of a's join, if it has not come yet
    since = time.monotonic()
    authorized = {"Authorization": f"Bearer {token}"}
    joins = scrape(server, "random_stream_connects_total", authorized)
    for auth in (None, {"token": "not-the-token-at-all-really"}):
        refused = socketio.Client(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            refused.connect(server.url, transports=["websocket"], auth=auth, wait_timeout=5)
    polling = Polling(server.url)  # the session opens; its CONNECT is refused
    polling.post(b"40")
    assert b"unauthorized" in polling.poll()[1]
    assert SseReader(server.url).status == 401
    time.sleep(2 * PERIOD)
    assert a.seen(since) == [], "nobody joined"
    assert scrape(server, "random_stream_connects_total", authorized) == joins, "not for a moment"
    b = watchers(server.url, headers=authorized)
    b.wait_count(2)
    a.wait_count(2)


def scrape(server, name: str, headers: dict) -> float:
    request = urllib.request.Request(server.url + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


# ---- scaled out: every process's viewers through Redis -----------------------------------


def redis_parts():
    pytest.importorskip("redis")
    import test_scaleout

    return test_scaleout


@pytest.fixture
def redis_server(tmp_path):
    server = redis_parts().RedisServer(tmp_path / "redis.log").start()
    yield server
    server.kill()


def cluster_of(server_factory, redis_server, n: int):
    servers = [server_factory("--interval", str(INTERVAL), "--message-queue", redis_server.url,
                              db=None, launch=False) for _ in range(n)]
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda s: s.start(), servers))
    return servers


def viewers_of(server) -> dict:
    return server.get("/api/viewers")[1]


def wait_viewers(server, expected: dict, timeout: float) -> float:
    """Seconds until /api/viewers says `expected`."""
    started = time.monotonic()
    while viewers_of(server) != expected:
        assert time.monotonic() - started < timeout, (viewers_of(server), expected, timeout)
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.redis
def test_a_tally_in_redis_sums_the_processes_and_drops_the_silent(redis_server):
    from randstream.lease import Lease
    from randstream.redis_presence import RedisTally
    from randstream.redis_store import Keys, RedisStore, connect
    from randstream.scaleout import RedisLink

    client = connect(redis_server.url)
    keys = Keys.with_prefix("test:")
    link = RedisLink("test")

    def tally(drop: float) -> RedisTally:
        store = RedisStore(client, Lease(client, keys.lease, keys.seq, ttl=1), 100, keys, "test")
        return RedisTally(store, link, drop)

    a, b, c = tally(0.5), tally(0.5), tally(0.5)
    assert a.report(3) == (3, 1)
    assert b.report(4) == (7, 2)
    assert c.report(0) == (7, 3), "a process without viewers is still a process"
    c.leave()
    assert a.report(5) == (9, 2), "a process that left is gone at once"
    client.hset(keys.viewers, "junk", "not a report")
    time.sleep(0.7)  # b says nothing for longer than the drop time: killed, or cut off
    assert a.report(5) == (5, 1)
    assert set(client.hkeys(keys.viewers)) == {a.token.encode()}, "the silent and the junk are gone"
    assert 0 < client.pttl(keys.viewers) <= 500, "and all of it when every process is"
    assert link.problem is None
    client.close()


@pytest.mark.redis
def test_the_total_across_processes_a_clean_stop_and_a_sigkill(server_factory, redis_server,
                                                                 watchers):
    servers = cluster_of(server_factory, redis_server, 3)
    ones = [watchers(servers[0].url)]
    twos = [watchers(servers[1].url) for _ in range(2)]
    threes = [watchers(servers[2].url) for _ in range(3)]
    for watcher in ones + twos + threes:
        watcher.wait_count(6)
    for server in servers:
        assert viewers_of(server) == {"count": 6, "processes": 3}
        assert metric(server, "random_stream_cluster_viewers") == 6
    assert [metric(s, "random_stream_viewers") for s in servers] == [1, 2, 3]

    # A clean stop: the process leaves the tally before its clients are told to go.
    assert servers[2].stop() == 0
    took = wait_viewers(servers[0], {"count": 3, "processes": 2}, timeout=3 * PERIOD)
    assert took < MIN_DROP / 2, took
    for watcher in ones + twos:
        watcher.wait_count(3)

    # SIGKILL: counted until the drop time has passed, then no more.
    servers[1].proc.send_signal(signal.SIGKILL)
    servers[1].proc.wait(10)
    wait_viewers(servers[0], {"count": 1, "processes": 1},
                 timeout=drop_after(PERIOD) + 2 * PERIOD + 3)
    ones[0].wait_count(1)
    assert "Traceback" not in servers[0].log()


@pytest.mark.redis
def test_redis_away_keeps_the_last_total_and_local_changes(server_factory, redis_server,
                                                            watchers):
    servers = cluster_of(server_factory, redis_server, 2)
    a, b = watchers(servers[0].url), watchers(servers[1].url)
    a.wait_count(2)
    b.wait_count(2)
    redis_server.kill()
    time.sleep(2 * PERIOD)
    c = watchers(servers[0].url)  # joins while Redis is away
    c.wait_count(3)
    assert c.seen()[0] == 3, "the last known total plus this process's change"
    a.wait_count(3)
    time.sleep(3 * PERIOD)
    assert viewers_of(servers[0]) == {"count": 3, "processes": 2}
    redis_server.start()  # same port, empty
    for server in servers:
        wait_viewers(server, {"count": 3, "processes": 2}, timeout=10 * PERIOD)
    b.wait_count(3)
    for server in servers:
        log = server.log()
        assert log.count("redis lost") == 1 and log.count("redis back") == 1, log
        assert "Traceback" not in log


# ---- the page ----------------------------------------------------------------------------


@pytest.mark.browser
def test_the_page_shows_who_is_watching(server_factory, browser, watchers):
    from test_browser import Dashboard

    server = server_factory("--interval", str(INTERVAL))
    html = server.get("/")[1]
    assert '<p id="viewers" class="viewers" data-count="" hidden>' in html, "nothing until a count"
    board = Dashboard(browser, server, viewport={"width": 1280, "height": 800})
    try:
        page = board.page
        board.open()
        viewers = page.locator("#viewers")
        board.wait_for("() => document.getElementById('viewers-text').textContent === '1 watching'")
        assert viewers.is_visible()
        assert viewers.aria_snapshot() == "- paragraph: 1 person watching this stream"
        assert page.locator("#viewers-text").get_attribute("aria-hidden") == "true"
        assert page.locator("#viewers").get_attribute("aria-live") is None
        assert page.locator("#connection-status #viewers").count() == 0, "not in the live region"
        other = watchers(server.url)
        board.wait_for("() => document.getElementById('viewers-text').textContent === '2 watching'")
        assert viewers.aria_snapshot() == "- paragraph: 2 people watching this stream"
        other.close()
        board.wait_for("() => document.getElementById('viewers').dataset.count === '1'")
        board.assert_clean()
    finally:
        board.context.close()


@pytest.mark.browser
def test_the_count_is_blank_while_reconnecting_and_right_after(server_factory, browser):
    from test_browser import Dashboard

    server = server_factory("--interval", str(INTERVAL))
    board = Dashboard(browser, server, viewport={"width": 390, "height": 844},
                      color_scheme="dark")
    try:
        board.open()
        board.wait_for("() => document.getElementById('viewers').dataset.count === '1'")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        board.wait_for("() => document.getElementById('connection-status').dataset.state !== 'live'")
        assert board.page.locator("#viewers").is_hidden(), "a count from before the drop is stale"
        server.start()
        board.wait_for("() => document.getElementById('connection-status').dataset.state === 'live'"
                       " && document.getElementById('viewers').dataset.count === '1'")
        assert board.page.locator("#viewers-text").text_content() == "1 watching"
        box = board.page.locator("#viewers").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        board.assert_clean(
            allow=("ERR_CONNECTION_REFUSED", "WebSocket connection to", "Failed to load resource"))
    finally:
        board.context.close()
