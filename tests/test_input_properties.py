"""Property-based: arbitrary client input never breaks the server or changes the stream.

Socket.IO events go in the way engine.io hands them over on a real connection (through the
hooks' message handler), with Flask-SocketIO's test client collecting what comes back.
Routes get arbitrary query parameters through Flask's test client.
"""

from __future__ import annotations

import csv
import io
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from socketio import packet as sio_packet

from random_stream import create_app
from randstream.config import Settings
from randstream.live import parse_resume

ROUTES = ["/", "/api/latest", "/api/history", "/api/history.csv", "/api/stats", "/healthz",
          "/metrics", "/api/series", "/api/viewers"]
JSON_ROUTES = {"/api/latest", "/api/history", "/api/stats", "/healthz", "/api/series",
               "/api/viewers"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
resume_payloads = (
    json_values
    | st.fixed_dictionaries({"after": json_values})
    | st.fixed_dictionaries({"after": st.integers(min_value=-5, max_value=2**60)})
    | st.fixed_dictionaries({"after": st.integers(min_value=0, max_value=40)},
                            optional={"x": json_values})
)
event_names = st.text(max_size=30) | st.sampled_from(
    ["connect", "disconnect", "connect_error", "history", "random_number", "error", "message",
     "resume ", "Resume", "*"]
)
query_keys = (st.sampled_from(["after", "limit", "seq", "", "after[]", "LIMIT", "from", "to",
                               "points"])
              | st.text(max_size=10))
query_values = (
    st.integers(min_value=-(2**70), max_value=2**70).map(str)
    | st.sampled_from(["", "0", "1", "10000", "10001", "9007199254740992", " 5", "5 ", "+5",
                       "0x10", "1e3", "٣", "NaN", "-0", "1700000000.5", "9999999999.999999",
                       "10000000000", "2000", "2001", "1.", ".5", "1_0"])
    | st.text(max_size=20)
)


@pytest.fixture(scope="module")
def world():
    """One app with some readings, shared by every example: nothing may change it."""
    app = create_app(Settings(db=":memory:", async_mode="threading", interval=0.1, history=50))
    app.config["TESTING"] = True
    stream = app.extensions["stream"]
    for _ in range(30):
        stream.ticker.tick()
    yield app, stream
    stream.close()


def snapshot(stream) -> tuple:
    return (
        stream.history.last_seq,
        stream.history.latest(1000),
        stream.store.latest(1000),
        json.dumps(stream.stats.to_dict(), sort_keys=True, default=str),
    )


def send(client, socketio, event, *args) -> None:
    """One EVENT packet, in through engine.io's message handler (the hooks'), as on the wire."""
    encoded = sio_packet.Packet(sio_packet.EVENT, data=[event, *args]).encode()
    handler = socketio.server.eio.handlers["message"]
    for part in encoded if isinstance(encoded, list) else [encoded]:
        handler(client.eio_sid, part)


def connected(app):
    socketio = app.extensions["socketio"]
    client = socketio.test_client(app)
    received = client.get_received()
    assert [r["name"] for r in received] == ["history", "viewers"]
    return socketio, client


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=resume_payloads)
def test_resume_answers_history_or_an_error_and_changes_nothing(world, payload):
    app, stream = world
    before = snapshot(stream)
    socketio, client = connected(app)
    send(client, socketio, "resume", payload)
    received = client.get_received()
    assert len(received) == 1
    (answer,) = received
    after = parse_resume(payload)
    if isinstance(after, int):
        assert answer["name"] == "history"
        readings = answer["args"][0]["readings"]
        assert all(r["seq"] > after for r in readings)
        assert len(readings) <= stream.settings.history
    else:
        assert answer["name"] == "error"
        assert answer["args"] == [{"message": after}]
    assert client.is_connected()
    client.disconnect()
    assert snapshot(stream) == before


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=event_names, args=st.lists(json_values, max_size=3))
def test_any_other_event_is_ignored_and_changes_nothing(world, name, args):
    app, stream = world
    if name == "resume":
        return
    before = snapshot(stream)
    clients = stream.live.clients
    socketio, client = connected(app)
    send(client, socketio, name, *args)
    assert client.get_received() == []
    assert stream.live.clients == clients + 1, "no event moves the client count"
    client.disconnect()
    assert stream.live.clients == clients
    assert snapshot(stream) == before


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.text(max_size=60)
       | st.text(alphabet=string.digits + '[]{}",/:-', max_size=30).map(lambda s: "2" + s))
def test_arbitrary_socketio_packets_never_raise_or_change_the_stream(world, raw):
    app, stream = world
    before = snapshot(stream)
    socketio, client = connected(app)
    socketio.server.eio.handlers["message"](client.eio_sid, raw)  # must not raise
    if client.is_connected():  # a raw DISCONNECT ("1") ends the test client's session
        for answer in client.get_received():
            assert answer["name"] in ("history", "error", "viewers")
        # Leave through the hooks too: after a binary packet header ("5..", "6..") the server
        # waits for an attachment, and a plain DISCONNECT is then a bad packet it must survive.
        socketio.server.eio.handlers["message"](client.eio_sid, "1")
    assert snapshot(stream) == before


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(auth=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=5)
       | st.builds(lambda after: {"after": after}, st.integers(-3, 40) | json_values))
def test_any_connect_payload_gets_its_history_and_changes_nothing(world, auth):
    # The protocol's auth payload is an object; other values go through the raw-packet test.
    # `{"after": seq}` of a seq this stream reached gets the readings since; anything else
    # the snapshot, after an `error` if its `after` is malformed (other keys are ignored).
    from randstream.live import parse_after

    app, stream = world
    before = snapshot(stream)
    socketio = app.extensions["socketio"]
    client = socketio.test_client(app, auth=auth)
    received = client.get_received()
    after = parse_after(auth["after"]) if auth and "after" in auth else None
    if isinstance(after, str):
        assert [r["name"] for r in received] == ["error", "history", "viewers"]
        received = received[1:]
    assert [r["name"] for r in received] == ["history", "viewers"]
    readings = received[0]["args"][0]["readings"]
    if isinstance(after, int) and after <= stream.history.last_seq:
        assert [r["seq"] for r in readings] == list(range(after + 1, stream.history.last_seq + 1))[
            -stream.settings.history:]
    else:
        assert readings[-1]["seq"] == stream.history.last_seq
    client.disconnect()
    assert snapshot(stream) == before


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES),
       params=st.lists(st.tuples(query_keys, query_values), max_size=4))
def test_any_query_parameters_get_a_valid_answer_or_a_json_400(world, route, params):
    app, stream = world
    before = snapshot(stream)
    response = app.test_client().get(route, query_string=params)
    body = response.get_data()  # the CSV streams: read it all
    assert response.status_code in (200, 400, 503), (route, params, response.status_code)
    if response.status_code == 400 or route in JSON_ROUTES:
        assert response.is_json, (route, params)
        data = response.get_json()
        if response.status_code == 400:
            assert isinstance(data["error"], str) and data["error"]
    if response.status_code == 200 and route == "/api/history":
        check_history(dict(params), response.get_json()["readings"], stream)
    if response.status_code == 200 and route == "/api/series":
        data = response.get_json()
        assert data["from"] <= data["to"]
        assert len(data["buckets"]) <= int(dict(params).get("points", 600))
        assert sum(b["count"] for b in data["buckets"]) <= stream.history.last_seq
    if response.status_code == 200 and route == "/api/viewers":
        assert response.get_json() == {"count": stream.live.clients + stream.feed.clients,
                                       "processes": 1}
    if response.status_code == 200 and route == "/api/history.csv":
        rows = list(csv.reader(io.StringIO(body.decode())))
        assert rows[0] == ["seq", "value", "ts"]
        assert all(len(row) == 3 and row[0].isdigit() for row in rows[1:])
    assert b"Traceback" not in body
    assert snapshot(stream) == before


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES), raw=st.binary(max_size=40))
def test_undecodable_query_strings_never_give_a_500(world, route, raw):
    app, stream = world
    # WSGI carries the raw query as a latin-1 string: every byte value is possible.
    query = raw.decode("latin-1")
    response = app.test_client().get(route, environ_overrides={"QUERY_STRING": query})
    response.get_data()
    assert response.status_code in (200, 400, 503)
    if response.status_code == 400:
        assert response.is_json and response.get_json()["error"]


def check_history(params: dict, readings: list[dict], stream) -> None:
    seqs = [r["seq"] for r in readings]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    if "after" in params:
        assert all(seq > int(params["after"]) for seq in seqs)
    if "limit" in params:
        assert len(readings) <= int(params["limit"])
    assert all(stream.settings.min <= r["value"] <= stream.settings.max for r in readings)
