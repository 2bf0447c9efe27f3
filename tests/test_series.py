"""GET /api/series: the bucket arithmetic against the raw readings, over random histories
(gaps, irregular and backward timestamps, ints and floats), through every tier; the
parameters; the tiers after a restart and a kill -9; the CSV of a range."""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import time
import urllib.request
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from random_stream import create_app
from randstream import series
from randstream.config import Settings
from randstream.history import Reading
from randstream.series import LADDER, edge, index
from randstream.store import SqliteStore

TOKEN = "t" * 20
START = 1_699_999_200.0  # a whole hour (and 20 minutes, and day-aligned steps fall near)


def observed_app(db: str, interval: float = 0.01, **options):
    """An app whose readings come from record(), at the times a fake clock says."""
    app = create_app(Settings(db=db, async_mode="threading", interval=interval, history=50,
                              source="http", ingest_token=TOKEN, **options))
    app.config["TESTING"] = True
    return app


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(app, history: list[tuple[float, float]], start: float = START) -> list[Reading]:
    """Readings of `history` ((seconds since the last, value) each), through the ticker."""
    stream = app.extensions["stream"]
    stream.ticker.wall_clock = clock = Clock(start)
    kept = []
    for gap, value in history:
        clock.now += gap
        kept.append(stream.ticker.record(value))
    return kept


def check(body: dict, readings: list[Reading], points: int, interval: float) -> None:
    """What the contract promises of one answer, against the readings themselves."""
    step, frm, to = body["step"], body["from"], body["to"]
    assert step in LADDER and step >= interval
    assert frm == edge(index(frm, step), step) and to == edge(index(to, step), step)
    assert frm <= to and len(body["buckets"]) <= points
    inside = [r for r in readings if frm <= r.ts < to]
    assert sum(b["count"] for b in body["buckets"]) == len(inside)
    starts = [b["t"] for b in body["buckets"]]
    assert starts == sorted(set(starts)), "oldest first, one per start"
    for b in body["buckets"]:
        k = index(b["t"], step)
        assert b["t"] == edge(k, step) and frm <= b["t"] < to
        values = [r.value for r in inside if edge(k, step) <= r.ts < edge(k + 1, step)]
        assert b["count"] == len(values) > 0, "empty buckets are left out"
        assert (b["min"], b["max"]) == (min(values), max(values))
        assert type(b["mean"]) is float and b["min"] <= b["mean"] <= b["max"]
        assert b["mean"] == pytest.approx(math.fsum(values) / len(values), rel=1e-9, abs=1e-6)


gaps = st.one_of(
    st.sampled_from([0.0, 0.01, 0.25, 1.0, 59.99, 60.0, 3600.0, 86_400.0]),
    st.floats(0, 2), st.floats(0, 600), st.floats(0, 3 * 86_400),
    st.floats(-300, 0),  # the wall clock stepped back
)
values = st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False, width=64)
histories = st.lists(st.tuples(gaps, values), max_size=120)
point_counts = st.sampled_from([1, 2, 7, 60, 600, 2000]) | st.integers(1, 2000)


def span_of(readings: list[Reading]) -> tuple[float, float]:
    ts = [r.ts for r in readings] or [START]
    return min(ts), max(ts)


@st.composite
def queries(draw, readings: list[Reading]):
    """from/to around the history: inside it, across its ends, or anywhere."""
    lo, hi = span_of(readings)
    a = draw(st.floats(lo - 3600, hi + 3600) | st.sampled_from([lo, hi, lo - 0.5, hi + 1]))
    b = draw(st.floats(a, a + 10 * 86_400) | st.sampled_from([hi + 1, a + 60, a + 3600]))
    frm, to = float(f"{a:.6f}"), float(f"{b:.6f}")
    if not frm < to:
        to = frm + 1
    return frm, to, draw(point_counts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories, data=st.data(), trim_every=st.sampled_from([7, 1000]),
       retention=st.sampled_from([50, 1_000_000]), max_raw=st.sampled_from([40, 100_000]),
       reopen=st.sampled_from(["no", "restart", "kill"]))
def test_buckets_add_up_to_the_readings_in_every_tier(history, data, trim_every, retention,
                                                       max_raw, reopen):
    """Counts, min and max per bucket exact; the sum of counts the readings in [from, to).
    With rows written every 7 readings, raw trimmed to 50, raw answers capped at 40
    readings, per-minute rows kept 1 day and per-hour 2, and after a restart or a restart
    without close (the buckets held in memory lost, as at a kill -9)."""
    with tempfile.TemporaryDirectory() as tmp, \
            mock.patch("randstream.store.TRIM_EVERY", trim_every), \
            mock.patch("randstream.series.MAX_RAW_READINGS", max_raw):
        db = str(Path(tmp) / "s.sqlite3")
        options = {"retention": retention, "minute_tier_days": 1, "hour_tier_days": 2}
        app = observed_app(db, **options)
        readings = record(app, history)
        if reopen != "no":
            if reopen == "restart":
                app.extensions["stream"].close()
            app = observed_app(db, **options)
        client = app.test_client()
        for _ in range(3):
            frm, to, points = data.draw(queries(readings))
            response = client.get(f"/api/series?from={frm:.6f}&to={to:.6f}&points={points}")
            assert response.status_code == 200, response.get_json()
            body = response.get_json()
            check(body, readings, points, 0.01)
            assert body["to"] >= to
            lo, hi = span_of(readings)
            if hi - lo < 86_400 and lo <= hi:  # nothing trimmed from the tiers: all of it
                assert body["from"] <= frm
        app.extensions["stream"].close()


@given(ts=st.floats(0, series.MAX_TS), step=st.sampled_from(LADDER))
def test_a_timestamp_falls_in_exactly_one_bucket(ts, step):
    k = index(ts, step)
    assert edge(k, step) <= ts < edge(k + 1, step)


def test_an_old_database_s_rollups_agree_with_its_readings_on_every_edge(tmp_path):
    """Readings on and just below minute and hour edges: SQL's bucket (the migration's and
    the raw answers') is the one index() gives."""
    path = str(tmp_path / "s.sqlite3")
    store = SqliteStore(path, retention=10_000)
    readings, seq = [], 0
    for k in range(1, 40):
        for ts in (k * 60.0, math.nextafter(k * 60.0, 0), k * 3600.0 + 0.3):
            seq += 1
            readings.append(Reading(seq, k % 7 + 0.5, START + ts))
            store.append(readings[-1], {})
    store.close()
    db = __import__("sqlite3").connect(path)
    db.execute("DELETE FROM rollups")  # as a database from before tiers: built from scratch
    db.execute("UPDATE meta SET value = '0' WHERE key LIKE 'rolled:%'")
    db.commit()
    db.close()
    again = SqliteStore(path, retention=10_000)  # folds every reading after rolled = 0
    for points in (1, 30, 2000):
        check(again.series(START, START + 40 * 3600, points, 0.01), readings, points, 0.01)
    again.close()


def test_readings_on_hundredth_second_edges_fall_in_the_bucket_that_starts_there(tmp_path):
    """At step 0.01 ts * 100 rounds below k for some edges k / 100 (and to k just below
    them): the raw answer's SQL must not take those readings into the neighbour bucket."""
    store = SqliteStore(str(tmp_path / "s.sqlite3"), retention=10_000)
    first = index(START, 0.01)
    tricky = [ts for k in range(first, first + 2000)
              for ts in (edge(k, 0.01), math.nextafter(edge(k, 0.01), 0))
              if math.floor(ts * 100) != index(ts, 0.01)]
    assert len(tricky) > 100, "the naive bucket is wrong this often near START"
    readings = [Reading(seq, seq % 5, ts) for seq, ts in enumerate(sorted(tricky), 1)]
    for r in readings:
        store.append(r, {})
    body = store.series(START, START + 20, 2000, 0.01)
    assert body["step"] == 0.01
    check(body, readings, 2000, 0.01)
    store.close()


def test_a_week_is_answered_from_the_rollups_without_reading_a_reading(tmp_path):
    app = observed_app(str(tmp_path / "s.sqlite3"), interval=1.0)
    readings = record(app, [(60.0, i % 13) for i in range(7 * 24 * 60 + 5)])
    store = app.extensions["stream"].store
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    frm, to = START, START + 7 * 86_400
    body = store.series(frm, to, 600, 1.0)
    assert body["step"] == 1200.0 and len(body["buckets"]) == 504
    check(body, readings, 600, 1.0)
    assert statements and not any("readings" in s for s in statements), statements
    statements.clear()
    body = store.series(to - 600, to, 600, 1.0)  # ten minutes: the readings themselves
    assert body["step"] == 1.0 and any("FROM readings" in s for s in statements)
    check(body, readings, 600, 1.0)
    app.extensions["stream"].close()


def test_the_newest_bucket_counts_the_newest_reading(client, stream):
    drawn = [stream.ticker.tick() for _ in range(5)]
    now = time.time()
    body = client.get(f"/api/series?from={now - 60:.3f}&to={now + 1:.3f}").get_json()
    assert sum(b["count"] for b in body["buckets"]) == 5
    assert body["buckets"][-1]["max"] <= 100
    check(body, drawn, 600, 0.1)


def test_defaults_are_the_last_hour_in_600_points(client, stream):
    drawn = [stream.ticker.tick() for _ in range(3)]
    before = time.time()
    body = client.get("/api/series").get_json()
    assert body["step"] == 10.0 and body["to"] >= before and body["to"] - body["from"] <= 3610
    assert body["from"] <= before - 3600
    check(body, drawn, 600, 0.1)


@pytest.mark.parametrize(("query", "message"), [
    ("from=10&to=5", "from must be before to"),
    ("from=5&to=5", "from must be before to"),
    ("points=0", "points must be a whole number from 1 to 2000"),
    ("points=2001", "points must be"),
    ("points=1.5", "points must be"),
    ("from=-5", "from must be epoch seconds"),
    ("to=1e9", "to must be epoch seconds"),
    ("to=nan", "to must be epoch seconds"),
    ("from=inf", "from must be epoch seconds"),
    ("from=1.", "from must be epoch seconds"),
    ("from=.5", "from must be epoch seconds"),
    ("from=", "from must be epoch seconds"),
    ("to=20000000000", "to must be epoch seconds"),
    ("step=60", "unknown query parameter: step"),
])
def test_bad_parameters_get_a_json_400(client, query, message):
    response = client.get(f"/api/series?{query}")
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_the_step_is_never_finer_than_the_interval(client, stream):
    body = client.get("/api/series?from=1000&to=1001&points=2000").get_json()
    assert body == {"from": 1000.0, "to": 1001.0, "step": 0.1, "buckets": []}


def test_the_csv_of_a_range_holds_the_readings_from_to(tmp_path):
    app = observed_app(str(tmp_path / "s.sqlite3"))
    readings = record(app, [(0.5 if i != 50 else -20.0, i * 0.25) for i in range(400)])
    client = app.test_client()
    frm, to = START + 30, START + 95.5
    response = client.get(f"/api/history.csv?from={frm}&to={to}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [int(r["seq"]) for r in rows] == [r.seq for r in readings if frm <= r.ts < to]
    assert [float(r["value"]) for r in rows] == [r.value for r in readings if frm <= r.ts < to]
    only_from = client.get(f"/api/history.csv?from={frm}&after=100&limit=3").get_data(as_text=True)
    assert [int(r["seq"]) for r in csv.DictReader(io.StringIO(only_from))] == [101, 102, 103]
    nothing = client.get("/api/history.csv?to=5").get_data(as_text=True)
    assert nothing == "seq,value,ts\n"
    assert client.get("/api/history.csv?from=9&to=8").status_code == 400
    app.extensions["stream"].close()


# --- real server processes: the tiers after a restart and a kill -9 ------------------------


def post_values(server, values: list) -> None:
    request = urllib.request.Request(
        server.url + "/api/readings", data=json.dumps({"values": values}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def stored(server) -> list[Reading]:
    _, text = server.get("/api/history.csv")
    return [Reading(int(r["seq"]), json.loads(r["value"]), float(r["ts"]))
            for r in csv.DictReader(io.StringIO(text))]


def answers(server, readings: list[Reading]) -> list[dict]:
    """The whole history at a step of each tier: per hour, per minute, raw."""
    first, last = readings[0].ts, readings[-1].ts
    out = []
    for frm, points in ((first - 7200, 4), (first - 60, 2000), (first, 2000)):
        status, body = server.get(f"/api/series?from={frm:.6f}&to={last + 1:.6f}&points={points}")
        assert status == 200, body
        out.append(body)
    assert {b["step"] >= 3600 for b in out[:1]} == {True} and out[2]["step"] < 60
    return out


def test_tiers_survive_a_kill_9_and_a_restart(server_factory, tmp_path):
    """The buckets held in memory are folded again from the readings after a kill -9
    (fails without load()'s fold: the open minute's and hour's readings are missing), and
    written at a clean stop."""
    server = server_factory("--source", "http", db=str(tmp_path / "s.sqlite3"),
                            env={"RANDOM_STREAM_INGEST_TOKEN": TOKEN})
    for batch in range(4):
        post_values(server, [i * 0.5 if i % 3 else i for i in range(batch * 100, batch * 100 + 100)])
    readings = stored(server)
    assert len(readings) == 400
    before = answers(server, readings)
    for body in before:
        check(body, readings, 2000, 1.0)
        assert sum(b["count"] for b in body["buckets"]) == 400

    server.kill()  # SIGKILL
    server.start()
    assert answers(server, readings) == before

    post_values(server, list(range(50)))
    readings = stored(server)
    before = answers(server, readings)
    assert server.stop() == 0
    server.start()
    assert answers(server, readings) == before
    for body in before:
        check(body, readings, 2000, 1.0)
        assert sum(b["count"] for b in body["buckets"]) == 450
