"""A stream's id, on real servers: a client's seq means something only in its own stream.

The story of each test: a client holds readings of stream A; the server restarts on a
database swapped for B (a restore, a bad deploy), whose seq is past A's; the client comes
back saying what it holds. It must get B's readings as a new client does, never B's
readings after A's seq merged into A's.
"""

from __future__ import annotations

import re
import threading

import pytest
import socketio
from conftest import fill_database, swap_database
from test_sse import SseReader

B_LAST = 300  # database B holds seqs 1..B_LAST, all of them in a snapshot (--history 900)


def stream_b(tmp_path):
    return fill_database(tmp_path / "b.sqlite3", B_LAST)


class Holder:
    """A python-socketio client that says in its CONNECT's auth what it holds (as the
    dashboard does on a reconnect): `{"after": last seq, "stream": its id}`."""

    def __init__(self, url: str, send_stream: bool = True) -> None:
        self.url = url
        self.send_stream = send_stream
        self.held: dict[int, int] = {}
        self.stream: str | None = None
        self.histories: list[dict] = []
        self.changed = threading.Condition()
        self.client = socketio.Client(reconnection=False)  # a server stopping says goodbye
        self.client.on("history", self.on_history)
        self.client.on("random_number", self.on_reading)
        self.connect()

    def connect(self) -> None:
        self.client.connect(self.url, transports=["websocket"], auth=self.auth, wait_timeout=10)

    def auth(self) -> dict | None:
        with self.changed:
            if not self.held:
                return None
            auth = {"after": max(self.held)}
            if self.send_stream and self.stream is not None:
                auth["stream"] = self.stream
            return auth

    def on_history(self, data) -> None:
        with self.changed:
            self.histories.append(data)
            stream = data["stream"].get("id")
            if stream != self.stream:
                self.held.clear()  # another stream's readings replace ours
                self.stream = stream
            self.held.update((r["seq"], r["value"]) for r in data["readings"])
            self.changed.notify_all()

    def on_reading(self, data) -> None:
        with self.changed:
            self.held[data["seq"]] = data["value"]
            self.changed.notify_all()

    def wait_for(self, predicate, timeout: float = 30.0) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), "timed out waiting"

    def close(self) -> None:
        self.client.disconnect()


@pytest.fixture
def holders():
    opened: list[Holder] = []

    def open_holder(url: str, **options) -> Holder:
        opened.append(Holder(url, **options))
        return opened[-1]

    yield open_holder
    for holder in opened:
        holder.close()


def restart_on(server, replacement, holder: Holder | None = None) -> None:
    assert server.stop() == 0
    swap_database(replacement, server.db)
    server.start()
    if holder is not None:
        holder.client.wait()  # gone with the old server
        holder.connect()


def b_readings(server) -> dict[int, int]:
    """What the server on B holds (its live readings included)."""
    body = server.get("/api/history?after=0&limit=10000")[1]
    return {r["seq"]: r["value"] for r in body["readings"]}


def test_a_client_back_on_a_swapped_database_gets_its_snapshot_not_a_merge(
        server_factory, holders, tmp_path):
    """Fails before: the server took the client's `after` as a seq of B and sent B's readings
    after it, which the client merged after A's."""
    replacement = stream_b(tmp_path)
    server = server_factory("--interval", "0.1", db=str(tmp_path / "a.sqlite3"))
    holder = holders(server.url)
    holder.wait_for(lambda: len(holder.held) >= 10)
    a_id = holder.stream
    assert re.fullmatch("[0-9a-f]{16}", a_id) and max(holder.held) < B_LAST

    restart_on(server, replacement, holder)
    holder.wait_for(lambda: len(holder.histories) >= 2)
    answer = holder.histories[1]  # what the reconnect got
    b_id = server.get("/api/latest")[1]["stream"]["id"]
    assert answer["stream"]["id"] == b_id != a_id
    assert answer["readings"][0]["seq"] == 1, "B's snapshot, as a new client gets it"
    holder.wait_for(lambda: max(holder.held) >= B_LAST + 3)
    stored = b_readings(server)
    with holder.changed:
        held = dict(holder.held)
    assert held == {seq: stored[seq] for seq in held}, "B's readings only, none of A's"
    assert min(held) == 1


def test_a_client_that_sends_no_stream_is_resumed_as_before(server_factory, holders, tmp_path):
    """Clients from before stream ids keep today's behaviour: `after` alone is a seq of
    this stream (what the README's contract says they risk on a swapped database)."""
    server = server_factory("--interval", "0.5", db=str(fill_database(tmp_path / "b.sqlite3", 50)))
    old = socketio.Client(reconnection=False)
    got: list[dict] = []
    done = threading.Event()
    old.on("history", lambda data: (got.append(data), done.set()))
    old.connect(server.url, transports=["websocket"], auth={"after": 40}, wait_timeout=10)
    try:
        assert done.wait(10)
        assert got[0]["readings"][0]["seq"] == 41
    finally:
        old.disconnect()


def test_sse_with_a_last_event_id_of_another_stream_replays_the_new_one(server_factory, tmp_path):
    """Fails before: Last-Event-ID was a bare seq, taken as one of whatever database the
    server now has; a reader of A got B's readings after A's seq."""
    replacement = stream_b(tmp_path)
    server = server_factory("--interval", "0.1", db=str(tmp_path / "a.sqlite3"))
    reader = SseReader(server.url, "/api/stream?after=0")
    for _ in range(5):
        reader.next_event()
    a_id, last_id = reader.stream, reader.last_id
    reader.close()

    restart_on(server, replacement)
    back = SseReader(server.url, headers={"Last-Event-ID": last_id})  # as EventSource does
    first = back.next_event()
    assert back.stream != a_id
    assert first["seq"] == 1 and first["value"] == b_readings(server)[1]
    back.close()


@pytest.mark.parametrize("ask, first", [
    ({"Last-Event-ID": "{own}:250"}, 251),
    ({"Last-Event-ID": "250"}, 251),  # a bare seq: clients from before stream ids
    ({"Last-Event-ID": "0123456789abcdef:250"}, 1),
    ({"path": "?after=250&stream={own}"}, 251),
    ({"path": "?after=250&stream=0123456789abcdef"}, 1),
    ({"path": "?after=250&stream=0123456789abcdef", "Last-Event-ID": "{own}:260"}, 261),
])
def test_sse_resumes_only_a_seq_of_its_own_stream(server_factory, tmp_path, ask, first):
    server = server_factory("--interval", "1", db=str(stream_b(tmp_path)))
    own = server.get("/api/latest")[1]["stream"]["id"]
    ask = {k: v.format(own=own) for k, v in ask.items()}
    path = "/api/stream" + ask.pop("path", "")
    reader = SseReader(server.url, path, headers=ask)
    assert reader.next_event()["seq"] == first
    assert reader.stream == own
    reader.close()


def test_http_history_after_a_seq_of_another_stream_is_the_newest_readings(server_factory, tmp_path):
    server = server_factory("--interval", "1", db=str(stream_b(tmp_path)))
    own = server.get("/api/latest")[1]["stream"]["id"]
    mine = server.get(f"/api/history?after=250&limit=5&stream={own}")[1]
    assert [r["seq"] for r in mine["readings"]] == [251, 252, 253, 254, 255]
    assert mine["stream"]["id"] == own
    foreign = server.get("/api/history?after=250&limit=5&stream=0123456789abcdef")[1]
    assert foreign == server.get("/api/history?limit=5")[1]
    status, body = server.get("/api/history?after=250&stream=" + "x" * 65)
    assert status == 400 and "stream must be" in body["error"]


def test_each_start_on_memory_is_a_new_stream_and_a_file_keeps_its_id(server_factory, tmp_path):
    memory = server_factory("--interval", "0.5")
    ids = [memory.get("/api/history")[1]["stream"]["id"]]
    assert memory.stop() == 0
    memory.start()
    ids.append(memory.get("/api/history")[1]["stream"]["id"])
    assert ids[0] != ids[1], "a restart on :memory: is another stream: clients start over"

    kept = server_factory("--interval", "0.5", db=str(tmp_path / "s.sqlite3"))
    before = kept.get("/api/history")[1]["stream"]["id"]
    assert kept.stop() == 0
    kept.start()
    assert kept.get("/api/history")[1]["stream"]["id"] == before
