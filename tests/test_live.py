"""Socket.IO handlers, in process: snapshot on connect, resume, errors for that client only."""

import re
import time

import pytest


def events(client, name):
    return [e["args"][0] for e in client.get_received() if e["name"] == name]


def tick(stream, n):
    return [stream.ticker.tick() for _ in range(n)]


def test_connect_sends_history_oldest_first_with_the_stream(stream, app):
    drawn = tick(stream, 5)
    client = app.extensions["socketio"].test_client(app)
    (history,) = events(client, "history")
    assert history["readings"] == [r.to_dict() for r in drawn]
    assert history["stream"] == {"id": stream.history.stream_id, "min": 0, "max": 100,
                                 "interval": 0.1}
    assert re.fullmatch("[0-9a-f]{16}", history["stream"]["id"])


def test_history_is_capped_at_the_history_setting(stream, app):
    tick(stream, 80)  # settings.history is 50
    client = app.extensions["socketio"].test_client(app)
    (history,) = events(client, "history")
    assert [r["seq"] for r in history["readings"]] == list(range(31, 81))


def test_every_client_gets_each_reading(stream, app):
    socketio = app.extensions["socketio"]
    a, b = socketio.test_client(app), socketio.test_client(app)
    a.get_received(), b.get_received()
    reading = stream.ticker.tick()
    assert events(a, "random_number") == events(b, "random_number") == [reading.to_dict()]


def test_resume_sends_what_came_after(stream, socket_client):
    tick(stream, 10)
    socket_client.get_received()
    socket_client.emit("resume", {"after": 7})
    (history,) = events(socket_client, "history")
    assert [r["seq"] for r in history["readings"]] == [8, 9, 10]


def test_resume_after_a_long_absence_sends_the_newest_readings(stream, socket_client):
    tick(stream, 120)
    socket_client.get_received()
    socket_client.emit("resume", {"after": 3})
    (history,) = events(socket_client, "history")
    assert [r["seq"] for r in history["readings"]] == list(range(71, 121))


def test_a_client_back_says_what_it_holds_and_gets_only_the_readings_since(stream, app):
    """Fails on the old code: the CONNECT's auth was ignored, so a client back after a
    drop got the whole snapshot (up to --history readings) and then needed a resume."""
    tick(stream, 10)
    client = app.extensions["socketio"].test_client(app, auth={"after": 7})
    (history,) = events(client, "history")
    assert [r["seq"] for r in history["readings"]] == [8, 9, 10]
    assert history["stream"] == {"id": stream.history.stream_id, "min": 0, "max": 100,
                                 "interval": 0.1}
    assert events(client, "error") == []
    up_to_date = app.extensions["socketio"].test_client(app, auth={"after": 10})
    assert events(up_to_date, "history") == [{"readings": [], "stream": history["stream"]}]


def test_a_connect_after_a_seq_this_stream_never_reached_gets_the_snapshot(stream, app):
    drawn = tick(stream, 5)  # e.g. the client held a stream that a fresh server replaced
    client = app.extensions["socketio"].test_client(app, auth={"after": 900})
    (history,) = events(client, "history")
    assert history["readings"] == [r.to_dict() for r in drawn]


def test_a_connect_after_a_seq_of_another_stream_gets_the_snapshot(stream, app):
    """Fails before: the auth's stream was ignored, so another stream's seq 3 was resumed."""
    drawn = tick(stream, 5)
    socketio = app.extensions["socketio"]
    client = socketio.test_client(app, auth={"after": 3, "stream": "0123456789abcdef"})
    received = client.get_received()
    assert [e["name"] for e in received] == ["history", "viewers"]
    assert received[0]["args"][0]["readings"] == [r.to_dict() for r in drawn]
    own = socketio.test_client(app, auth={"after": 3, "stream": stream.history.stream_id})
    assert [r["seq"] for r in events(own, "history")[0]["readings"]] == [4, 5]


@pytest.mark.parametrize("auth", ["7", [7], {"token": "x"}])
def test_a_connect_auth_that_is_not_ours_is_ignored(stream, app, auth):
    drawn = tick(stream, 5)
    client = app.extensions["socketio"].test_client(app, auth=auth)
    received = client.get_received()
    assert [e["name"] for e in received] == ["history", "viewers"]
    assert received[0]["args"][0]["readings"] == [r.to_dict() for r in drawn]


@pytest.mark.parametrize("auth, word", [
    ({"after": -1}, "after"), ({"after": "7"}, "after"), ({"after": None}, "after"),
    ({"after": 1.5}, "after"), ({"after": 3, "stream": 7}, "stream"),
    ({"after": 3, "stream": None}, "stream"), ({"after": 3, "stream": ""}, "stream"),
    ({"after": 3, "stream": "x" * 65}, "stream"),
])
def test_a_malformed_connect_auth_gets_an_error_and_the_snapshot(stream, app, auth, word):
    drawn = tick(stream, 5)
    client = app.extensions["socketio"].test_client(app, auth=auth)
    assert client.is_connected()
    received = client.get_received()
    assert [e["name"] for e in received] == ["error", "history", "viewers"]
    assert word in received[0]["args"][0]["message"]
    assert received[1]["args"][0]["readings"] == [r.to_dict() for r in drawn]


@pytest.mark.parametrize("payload", [
    None, "7", 7, [7], {}, {"after": "7"}, {"after": -1}, {"after": 1.5}, {"after": True},
    {"after": None}, {"after": 2**60}, {"after": 1, "extra": 2}, {"seq": 1},
])
def test_malformed_resume_gets_an_error_for_that_client_only(stream, app, payload):
    socketio = app.extensions["socketio"]
    bad, bystander = socketio.test_client(app), socketio.test_client(app)
    tick(stream, 3)
    bad.get_received(), bystander.get_received()
    before = (stream.history.last_seq, stream.stats.count)
    bad.emit("resume", payload)
    received = bad.get_received()
    assert [e["name"] for e in received] == ["error"]
    assert "resume" in received[0]["args"][0]["message"]
    assert bystander.get_received() == []
    assert bad.is_connected()
    assert (stream.history.last_seq, stream.stats.count) == before


def test_unknown_events_are_ignored(stream, socket_client):
    socket_client.get_received()
    socket_client.emit("random_number", {"seq": 999, "value": 5, "ts": 0})
    socket_client.emit("set_interval", 0.001)
    assert socket_client.get_received() == []
    assert stream.history.last_seq == 0
    assert socket_client.is_connected()


def test_connected_clients_are_counted(app, stream):
    socketio = app.extensions["socketio"]
    a, b = socketio.test_client(app), socketio.test_client(app)
    assert stream.live.clients == 2
    a.disconnect()
    assert stream.live.clients == 1
    b.disconnect()
    assert (stream.live.connects, stream.live.disconnects) == (2, 2)


def test_the_snapshot_is_encoded_once_per_reading(stream, app):
    tick(stream, 5)
    first = stream.live.snapshot()
    assert stream.live.snapshot() is first, "clients joining between ticks share one encoding"
    socketio = app.extensions["socketio"]
    a, b = socketio.test_client(app), socketio.test_client(app)
    assert events(a, "history") == events(b, "history")
    tick(stream, 1)
    again = socketio.test_client(app)
    (history,) = events(again, "history")
    assert history["readings"][-1]["seq"] == 6, "a new reading makes a new snapshot"
    assert stream.live.snapshot() is not first


def test_a_client_that_leaves_takes_its_waiting_resume_along(stream, app):
    """Fails before: its request stayed counted against the queue's cap, so clients that
    asked and left could fill it and get everyone else 'the server is busy'."""
    import time

    tick(stream, 5)
    answers = stream.live.answers
    answers.budget, answers.stamp = -0.25, time.monotonic()  # spent: requests wait ~1 s
    client = app.extensions["socketio"].test_client(app)
    client.emit("resume", {"after": 0})
    assert len(answers.queued) == 1
    client.disconnect()
    assert answers.queued == set()


def test_a_herd_asking_after_the_same_seq_is_answered_with_the_budget_spent(stream, app):
    """After a restart every client resumes after the same seq: one encoding answers them
    all, so none waits in the queue or is told the server is busy when the encoding budget
    is spent (by an encode that the process was preempted in, say)."""
    socketio = app.extensions["socketio"]
    tick(stream, 10)
    first = socketio.test_client(app)
    first.get_received()
    first.emit("resume", {"after": 7})
    assert [r["seq"] for r in events(first, "history")[0]["readings"]] == [8, 9, 10]
    answers = stream.live.answers
    answers.budget, answers.stamp = -10.0, time.monotonic()  # spent for the next 40 s
    herd = [socketio.test_client(app) for _ in range(5)]
    for client in herd:
        client.get_received()
        client.emit("resume", {"after": 7})
    for client in herd:
        (history,) = events(client, "history")
        assert [r["seq"] for r in history["readings"]] == [8, 9, 10]
        assert events(client, "error") == []
