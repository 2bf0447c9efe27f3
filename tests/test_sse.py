"""GET /api/stream over a raw socket, the way curl -N reads it, on real servers."""

from __future__ import annotations

import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ServerProcess, fill_database, http_get
from rawsocket import http

from randstream.fanout import Fanout
from randstream.history import History, Reading
from randstream.sse import Feed
from randstream.store import SqliteStore


class SseReader:
    """One GET /api/stream on a plain socket: headers, then events as they come (chunked)."""

    def __init__(self, base_url: str, path: str = "/api/stream", headers: dict | None = None,
                 timeout: float = 20.0) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.raw = b""
        while b"\r\n\r\n" not in self.raw:
            self._more()
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode().split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
        self.text = ""  # de-chunked body not yet parsed into events
        self.ended = False
        self.comments: list[str] = []
        self.fields: list[tuple[str, str]] = []
        self.stream: str | None = None  # the stream id in the last event's id
        self.last_id: str | None = None  # what EventSource would send as Last-Event-ID

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.raw += data

    def _dechunk(self) -> None:
        while True:
            end = self.raw.find(b"\r\n")
            if end < 0:
                return
            size = int(self.raw[:end], 16)
            if size == 0:
                self.ended = True
                return
            if len(self.raw) < end + 2 + size + 2:
                return
            self.text += self.raw[end + 2:end + 2 + size].decode()
            self.raw = self.raw[end + 2 + size + 2:]

    def next_event(self) -> dict:
        """The next `reading` event's id and data; comments and other fields are kept aside."""
        while True:
            while "\n\n" in self.text:
                block, self.text = self.text.split("\n\n", 1)
                event = {}
                for line in block.split("\n"):
                    if line.startswith(":"):
                        self.comments.append(line)
                    else:
                        name, _, value = line.partition(": ")
                        event[name] = value
                        self.fields.append((name, value))
                if "data" in event:
                    assert event["event"] == "reading"
                    data = json.loads(event["data"])
                    stream, _, seq = event["id"].partition(":")
                    assert re.fullmatch("[0-9a-f]{16}", stream) and seq == str(data["seq"])
                    self.stream, self.last_id = stream, event["id"]
                    return data
            if self.ended:
                raise EOFError("the response ended")
            self._more()
            self._dechunk()

    def read_until_end(self) -> None:
        while not self.ended:
            try:
                self.next_event()
            except EOFError:
                return

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("mode", ["eventlet", "gevent", "threading"])
def test_events_replay_then_go_live_in_order(server_factory, mode):
    server = server_factory("--interval", "0.1", "--async-mode", mode)
    reader = SseReader(server.url, "/api/stream?after=0")
    assert reader.status == 200
    assert reader.headers["content-type"].startswith("text/event-stream")
    assert reader.headers["cache-control"] == "no-cache"
    assert reader.headers["x-accel-buffering"] == "no"
    seqs = [reader.next_event()["seq"] for _ in range(15)]
    assert seqs == list(range(1, 16))  # from the first reading on, no gap, no repeat
    _, latest = server.get("/api/latest")
    assert latest["seq"] >= 15
    assert server.get("/healthz")[1]["sse_clients"] == 1
    reader.close()


def test_values_are_the_socketio_readings(server_factory, viewers):
    server = server_factory("--interval", "0.1")
    viewer = viewers(server.url)
    reader = SseReader(server.url)
    events = [reader.next_event() for _ in range(5)]
    viewer.wait_for(lambda: viewer.last_seq() >= events[-1]["seq"])
    by_seq = {r["seq"]: r for r in viewer.numbers}
    assert all(by_seq[e["seq"]] == e for e in events)
    reader.close()


def test_a_reconnect_with_last_event_id_loses_nothing(server_factory):
    server = server_factory("--interval", "0.05", "--history", "500")
    first = SseReader(server.url)
    seen = [first.next_event()["seq"] for _ in range(10)]
    first.close()
    time.sleep(1.0)  # readings go on while this client is away
    second = SseReader(server.url, headers={"Last-Event-ID": str(seen[-1])})
    more = [second.next_event()["seq"] for _ in range(40)]
    assert seen + more == list(range(seen[0], seen[0] + 50))
    second.close()


def test_last_event_id_wins_over_after_and_the_replay_is_capped(server_factory):
    server = server_factory("--interval", "0.02", "--history", "20")
    SseReader(server.url).next_event()
    time.sleep(1.0)
    _, latest = server.get("/api/latest")
    reader = SseReader(server.url, "/api/stream?after=0", headers={"Last-Event-ID": "1"})
    first = reader.next_event()["seq"]
    assert first > 2  # not from seq 1: at most --history readings back
    assert first >= latest["seq"] - 20
    reader.close()


def test_an_id_from_the_future_streams_from_now(server_factory):
    """Fails before: a Last-Event-ID above the newest seq (a server that started afresh)
    left the client waiting for that seq, receiving nothing."""
    server = server_factory("--interval", "0.1", db=":memory:")
    reader = SseReader(server.url, headers={"Last-Event-ID": "99999999"})
    first = reader.next_event()
    assert first["seq"] <= server.get("/api/latest")[1]["seq"]
    assert reader.next_event()["seq"] == first["seq"] + 1
    reader.close()


def test_the_per_address_refusal_says_when_to_retry(server_factory):
    server = server_factory("--interval", "0.1", "--max-per-address", "1")
    first = SseReader(server.url)
    first.next_event()
    status, headers, body = http("GET", server.url + "/api/stream")
    assert status == 429 and headers.get("retry-after") == "5", headers
    first.close()


@pytest.mark.parametrize("path, headers, message", [
    ("/api/stream?after=x", {}, "after must be a whole number"),
    ("/api/stream?limit=3", {}, "unknown query parameter: limit"),
    ("/api/stream", {"Last-Event-ID": "abc"}, "Last-Event-ID must be a seq"),
])
def test_bad_requests_are_400_json(server_factory, path, headers, message):
    server = server_factory("--interval", "0.5")
    status, _, body = http("GET", server.url + path, headers=headers)
    assert status == 400
    assert message in json.loads(body)["error"]


def test_origin_policy(server_factory):
    server = server_factory("--interval", "0.1", "--cors-origins", "https://ok.example")
    status, _, body = http("GET", server.url + "/api/stream", headers={"Origin": "https://evil.example"})
    assert status == 403 and json.loads(body)["error"] == "origin not allowed"
    allowed = SseReader(server.url, headers={"Origin": "https://ok.example"})
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == "https://ok.example"
    allowed.next_event()
    allowed.close()


def test_sse_clients_count_against_max_connections(server_factory, viewers):
    server = server_factory("--interval", "0.1", "--max-connections", "2")
    a, b = SseReader(server.url), SseReader(server.url)
    a.next_event()
    b.next_event()
    status, _, body = http("GET", server.url + "/api/stream")
    assert status == 503 and "connection limit" in json.loads(body)["error"]
    status, _, _ = http("GET", server.url + "/socket.io/?EIO=4&transport=polling")
    assert status == 503  # a Socket.IO client too: the cap counts both kinds
    a.close()
    deadline = time.monotonic() + 20
    while server.get("/healthz")[1]["sse_clients"] > 1:  # seen at the next write or heartbeat
        assert time.monotonic() < deadline
        time.sleep(0.1)
    viewer = viewers(server.url)
    viewer.wait_for(lambda: viewer.histories)
    b.close()


@pytest.mark.parametrize("mode", ["eventlet", "gevent", "threading"])
def test_sigterm_ends_open_streams_and_the_server(server_factory, mode):
    server = server_factory("--interval", "0.2", "--async-mode", mode)
    readers = [SseReader(server.url) for _ in range(3)]
    for reader in readers:
        reader.next_event()
    started = time.monotonic()
    assert server.stop() == 0
    for reader in readers:
        reader.read_until_end()  # the body ends (or the socket closes); nothing hangs
        reader.close()
    assert time.monotonic() - started < 15
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("mode", ["eventlet", "gevent"])
def test_a_client_that_stops_reading_is_let_go(server_factory, tmp_path, mode):
    """Fails without a send timeout: the response waited in send() forever, holding its slot."""
    # 3,000 stored readings to replay at once (~240 KB): more than the kernel's buffers hold,
    # so send() waits from the start. (From a few hundred readings it took ~1,400 ticks,
    # 12 s, of live events to fill them.)
    db = fill_database(tmp_path / "readings.sqlite3", 3000)
    server = server_factory("--interval", "0.01", "--history", "3000", "--ping-interval", "1",
                            "--ping-timeout", "1", "--async-mode", mode, db=str(db))
    host, port = server.url.removeprefix("http://").split(":")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect((host, int(port)))
    stuck.sendall(f"GET /api/stream?after=0 HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    try:  # never read: the server's send buffer fills, then its send() waits
        deadline = time.monotonic() + 60
        while server.get("/healthz")[1]["sse_clients"] != 1:
            assert time.monotonic() < deadline, "the stream never opened"
            time.sleep(0.1)
        while server.get("/healthz")[1]["sse_clients"] != 0:
            assert time.monotonic() < deadline, "a client that reads nothing holds its slot"
            time.sleep(0.5)
    finally:
        stuck.close()
    assert server.get("/healthz")[0] == 200
    assert "Traceback" not in server.log()


QUIET_TOKEN = "h" * 20


@pytest.fixture(scope="module", autouse=True)
def quiet_stream(tmp_path_factory):
    """A push server nobody pushes to, and a reader waiting for its heartbeat comment.

    The comment comes randstream.sse.HEARTBEAT (15 s) after the stream opens. Started with
    this module (autouse), the wait runs beside the other tests here instead of on its own;
    test_heartbeat_on_a_quiet_stream takes its outcome.
    """
    log = tmp_path_factory.mktemp("quiet") / "server.log"
    server = ServerProcess(("--source", "http"), ":memory:", log,
                           {"RANDOM_STREAM_INGEST_TOKEN": QUIET_TOKEN}).start()
    reader = SseReader(server.url)

    def heartbeat() -> None:
        reader.sock.settimeout(25)
        reader._more()  # the retry field, then silence until the heartbeat comment
        reader._dechunk()
        while ": heartbeat" not in reader.text:
            reader._more()
            reader._dechunk()

    with ThreadPoolExecutor(1) as pool:
        beat = pool.submit(heartbeat)
        yield server, reader, beat
        server.kill()  # ends the wait too, if no test took it
        reader.close()


def test_heartbeat_on_a_quiet_stream(quiet_stream):
    server, reader, beat = quiet_stream
    beat.result()  # raises if the stream ended or stayed silent for 25 s
    status, _, _ = http("POST", server.url + "/api/readings", body=b'{"value": 0.5}',
                        headers={"Authorization": f"Bearer {QUIET_TOKEN}"})
    assert status == 201
    assert reader.next_event()["value"] == 0.5
    assert ("retry", "2000") in reader.fields


def test_a_client_too_far_behind_is_dropped(tmp_path):
    history = History(SqliteStore(":memory:", retention=1000), ring_size=10)
    feed = Feed(history, history_size=10)
    fanout = Fanout(lambda reading: history.append(reading, {}), [feed.publish])
    events = feed.events(after=0)
    assert next(events).startswith(b"retry:")
    for seq in range(1, 4):
        fanout.publish(Reading(seq, seq, 0.0))
    assert next(events).count(b"event: reading") == 3
    for seq in range(4, 400):  # this client did not read meanwhile
        fanout.publish(Reading(seq, seq, 0.0))
    chunks = list(events)  # what it still gets, then the end
    assert b"too far behind" in chunks[-1]
    assert feed.dropped == 1


def test_the_nginx_config_does_not_buffer_the_stream():
    conf = (http_get.__globals__["ROOT"] / "docs/nginx/random_stream.conf").read_text()
    block = conf[conf.index("location / {"):]
    block = block[:block.index("}")]
    assert "proxy_buffering off" in block  # (X-Accel-Buffering: no says the same per response)
    timeout = int(block.split("proxy_read_timeout", 1)[1].split("s;", 1)[0])
    assert timeout > 15  # the heartbeat comes every 15 s: nginx must not time the stream out
