"""Sources without a server: value checks, stdin lines, ingest bodies, stats per kind."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from random_stream import create_app
from randstream.config import ConfigError, Settings, load
from randstream.fanout import Fanout, Keep
from randstream.history import History
from randstream.sources import (
    MAX_BATCH,
    MAX_BODY,
    MAX_LINE,
    BadValue,
    IngestError,
    PullSource,
    check_value,
    load_callable,
    parse_ingest_body,
    parse_line,
    split_lines,
)
from randstream.stats import ObservedStats, Stats, binned
from randstream.store import SqliteStore
from randstream.stream import load_stats
from randstream.ticker import Ticker

TOKEN = "t" * 32

numbers = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
)


# Values ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, -5, 2**53, 1.5, -0.0, 1e300])
def test_numbers_are_values(value):
    assert check_value(value) == value


@pytest.mark.parametrize("value, kind", [
    (True, "not_a_number"), ("3", "not_a_number"), (None, "not_a_number"), ([1], "not_a_number"),
    (math.nan, "not_finite"), (math.inf, "not_finite"), (2**53 + 1, "out_of_range"),
])
def test_other_things_are_not(value, kind):
    with pytest.raises(BadValue) as info:
        check_value(value)
    assert info.value.kind == kind


@pytest.mark.parametrize("line, value", [(b"42\n", 42), (b" -3 \n", -3), (b"2.5", 2.5), (b"1e3", 1000.0)])
def test_stdin_lines(line, value):
    assert parse_line(line) == value
    assert type(parse_line(line)) is type(value)


@pytest.mark.parametrize("line, kind", [
    (b"abc", "not_a_number"), (b"", "empty"), (b"   ", "empty"), (b"nan", "not_finite"),
    (b"\xff\xfe", "not_utf8"), (b"inf", "not_finite"),
])
def test_bad_stdin_lines(line, kind):
    with pytest.raises(BadValue) as info:
        parse_line(line)
    assert info.value.kind == kind


def test_lines_split_across_reads_and_long_lines_are_dropped_whole():
    chunks = [b"1\n2", b"3\n", b"x" * (MAX_LINE + 10), b"yyy\n4\n", b"5"]
    lines = list(split_lines(iter(chunks + [b""]).__next__, lambda: True))
    assert lines == [b"1", b"23", None, b"4", b"5"]


# Ingest bodies -----------------------------------------------------------------------------

@given(st.binary(max_size=300))
def test_any_body_is_values_or_a_clear_error(body):
    try:
        values = parse_ingest_body(body)
    except IngestError as exc:
        assert exc.status in (400, 413)
        assert str(exc)
    else:
        assert 1 <= len(values) <= MAX_BATCH
        assert all(check_value(v) == v for v in values)


@given(st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12,
))
def test_any_json_is_values_or_a_clear_error(data):
    try:
        values = parse_ingest_body(json.dumps(data).encode())
    except IngestError as exc:
        assert exc.status == 400
    else:
        expected = [data["value"]] if "value" in data else data["values"]
        assert values == expected


@given(st.lists(numbers, min_size=1, max_size=MAX_BATCH))
def test_a_batch_comes_back_as_sent(values):
    assert parse_ingest_body(json.dumps({"values": values}).encode()) == values


@given(numbers)
def test_one_value_comes_back_as_sent(value):
    assert parse_ingest_body(json.dumps({"value": value}).encode()) == [value]


@pytest.mark.parametrize("body", [
    b'{"value": NaN}', b'{"value": Infinity}', b'{"value": "1"}', b'{"value": true}',
    b'{"values": []}', b'{"values": ' + json.dumps(list(range(MAX_BATCH + 1))).encode() + b"}",
    b'{"value": 1, "extra": 2}', b"[1, 2]", b"", b"{", b'{"value": 1e999}',
    b'{"value": ' + str(2**60).encode() + b"}", b"[" * 10_000,
])
def test_bad_bodies_are_400(body):
    with pytest.raises(IngestError) as info:
        parse_ingest_body(body)
    assert info.value.status == 400


def test_a_large_body_is_413():
    with pytest.raises(IngestError) as info:
        parse_ingest_body(b" " * (MAX_BODY + 1))
    assert info.value.status == 413


# Configuration -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--source", "http"], "--source http needs --ingest-token"),
    (["--source", "http", "--ingest-token", "short"], "at least 16 characters"),
    (["--source", "serial"], "--source must be random, stdin, http or module:callable"),
    (["--source", "stdin", "--message-queue", "redis://127.0.0.1:6379/0"],
     "--source stdin does not go with --message-queue: each process would receive its own "
     "pushes, but a scaled-out stream's readings are drawn by the one lease holder"),
    (["--source", "http", "--ingest-token", "t" * 16, "--message-queue", "redis://127.0.0.1/0"],
     "--source http does not go with --message-queue: each process would receive its own pushes"),
])
def test_source_settings_are_checked(argv, message):
    with pytest.raises(ConfigError, match=message):
        load(argv, environ={})


def test_the_token_comes_from_the_environment_and_stays_out_of_repr():
    s = load(["--source", "http"], environ={"RANDOM_STREAM_INGEST_TOKEN": TOKEN})
    assert s.ingest_token == TOKEN
    assert TOKEN not in repr(s)


@pytest.mark.parametrize("spec, message", [
    ("examples/nothing.py:read", "no file examples/nothing.py"),
    ("examples/loadavg.py:nothing", "has no callable 'nothing'"),
    ("no_such_module_here:read", "cannot import no_such_module_here"),
    (":read", "expected module:callable"),
])
def test_a_bad_callable_is_one_line(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_callable(spec)


def test_a_module_callable_loads():
    assert load_callable("os:getpid")() > 0
    assert isinstance(load_callable("examples/loadavg.py:read")(), float)


# Stats per kind ----------------------------------------------------------------------------

def test_observed_stats_have_no_uniformity_verdict():
    stats = ObservedStats("pull")
    for seq, v in enumerate([1.5, 2.5, 3.5], start=1):
        stats.add(v, seq)
    body = stats.to_dict([])
    assert body["kind"] == "observed" and body["uniformity"] is None
    assert body["chi_square"] is None and body["p_value"] is None
    assert body["mean"] == pytest.approx(2.5)
    assert body["stddev"] == pytest.approx(math.sqrt(2 / 3))
    assert ObservedStats.from_state(stats.state()) == stats


def test_random_stats_say_uniform():
    stats = Stats(0, 3)
    stats.add(1, 1)
    body = stats.to_dict()
    assert body["kind"] == "uniform"
    assert body["uniformity"] == {"chi_square": body["chi_square"], "p_value": body["p_value"]}


@given(st.lists(numbers.filter(lambda v: abs(v) < 1e300), min_size=1, max_size=200))
def test_bins_hold_every_value(values):
    h = binned(values)
    assert sum(h["counts"]) == len(values) == h["readings"]
    assert len(h["edges"]) == len(h["counts"]) + 1
    assert h["edges"][0] <= min(values) and max(values) <= h["edges"][-1]


def test_few_integers_get_a_bin_each():
    assert binned([3, 5, 5])["counts"] == [1, 0, 2]


def test_a_database_remembers_its_source_kind(tmp_path):
    db = str(tmp_path / "s.sqlite3")
    store = SqliteStore(db, retention=1000)
    history = History(store, 10)
    stats = ObservedStats("stdin")
    ticker = Ticker(history, Fanout(Keep(history, stats), []).publish, interval=1,
                    sleep=lambda s: None, source=PullSource("x:y", lambda: 1.5))
    ticker.record(2.5)
    with pytest.raises(ConfigError, match="comes from --source stdin, not random"):
        load_stats(store, Settings(db=db), "random")
    assert load_stats(store, Settings(db=db), "stdin").count == 1
    store.close()


def test_an_old_database_is_random(tmp_path):
    db = str(tmp_path / "s.sqlite3")
    store = SqliteStore(db, retention=1000)
    history = History(store, 10)
    Ticker(history, Fanout(Keep(history, Stats(0, 100)), []).publish, interval=1, lo=0,
           hi=100, seed=1, sleep=lambda s: None).tick()
    assert "kind" not in store.stats_state()  # what random wrote before sources existed
    with pytest.raises(ConfigError, match="comes from --source random, not http"):
        load_stats(store, Settings(db=db), "http")
    store.close()


def test_post_readings_is_closed_for_other_sources(client):
    response = client.post("/api/readings", json={"value": 1},
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code in (404, 405)
    assert "error" in response.get_json()


def test_http_source_in_process():
    app = create_app(Settings(db=":memory:", async_mode="threading", source="http",
                              ingest_token=TOKEN))
    stream = app.extensions["stream"]
    stream.ticker.source.run(stream.ticker.record, None, lambda: True)
    client = app.test_client()
    ok = client.post("/api/readings", json={"values": [1, 2.5]},
                     headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 201
    assert [r["value"] for r in ok.get_json()["readings"]] == [1, 2.5]
    assert client.get("/api/stats").get_json()["uniformity"] is None
    assert client.get("/api/latest").get_json()["value"] == 2.5
    stream.close()
