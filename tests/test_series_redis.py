"""/api/series scaled out: the tiers in Redis, kept by the fenced write, against the
readings; built once for a stream stored before them; the same on every process, after
the leader's kill -9."""

from __future__ import annotations

import signal
from unittest import mock

import pytest
import test_scaleout
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_scaleout import RedisServer, wait_until
from test_series import START, check, histories, queries

from randstream import redis_tiers
from randstream.history import Reading
from randstream.lease import Lease
from randstream.redis_store import Fenced, Keys, RedisStore, connect
from randstream.stats import ObservedStats

pytestmark = pytest.mark.redis

# test_scaleout's fixtures: a redis-server of the test's own, server processes sharing it.
redis_server = test_scaleout.redis_server
cluster = test_scaleout.cluster

KEEP = {60: 86_400.0, 3600: 2 * 86_400.0}  # a day of minutes, two of hours: trims happen


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis") / "redis.log").start()
    yield server
    server.kill()


def new_store(url: str, prefix: str = "test:") -> RedisStore:
    client = connect(url)
    keys = Keys.with_prefix(prefix)
    return RedisStore(client, Lease(client, keys.lease, keys.seq, ttl=5), 1_000_000, keys,
                      "test", KEEP)


def readings_of(history, start: float = START) -> list[Reading]:
    out, ts = [], start
    for seq, (gap, value) in enumerate(history, 1):
        ts += gap
        out.append(Reading(seq, value, ts))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories, data=st.data(), max_raw=st.sampled_from([40, 100_000]))
def test_buckets_from_redis_add_up_to_the_readings(shared_redis, history, data, max_raw):
    client = connect(shared_redis.url)
    client.flushdb()
    store = new_store(shared_redis.url)
    assert store.lease.claim(0).leading
    readings = readings_of(history)
    for r in readings:
        store.append(r, ObservedStats("http").state())
    with mock.patch("randstream.series.MAX_RAW_READINGS", max_raw):
        for _ in range(3):
            frm, to, points = data.draw(queries(readings))
            body = store.series(frm, to, points, 0.01)
            check(body, readings, points, 0.01)
            assert body["to"] >= to
    store.close()
    client.close()


def test_a_fenced_write_leaves_the_tiers_as_they_were(redis_server):
    leader, deposed = new_store(redis_server.url), new_store(redis_server.url)
    assert leader.lease.claim(0).leading and not deposed.lease.claim(0).leading
    readings = [Reading(seq, seq % 7, START + seq * 13.0) for seq in range(1, 301)]
    for r in readings:
        leader.append(r, {})
    before = [leader.series(START, START + 4000, points, 1.0) for points in (1, 60, 2000)]
    with pytest.raises(Fenced):
        deposed.append(Reading(301, 1000, START + 100.0), {})
    assert [deposed.series(START, START + 4000, p, 1.0) for p in (1, 60, 2000)] == before
    for points, body in zip((1, 60, 2000), before):
        check(body, readings, points, 1.0)
        assert sum(b["count"] for b in body["buckets"]) == 300


def test_a_stream_stored_before_tiers_gets_them_built_once(redis_server, caplog):
    """Readings in Redis without tiers (as before issue 20): the first process to start
    folds them, a few thousand per script; a second start folds nothing again; readings
    stored meanwhile by the new code are not folded twice."""
    client = connect(redis_server.url)
    keys = Keys.with_prefix("test:")
    readings = [Reading(seq, seq % 11 + (0.5 if seq % 4 else 0), START + seq * 3.7)
                for seq in range(1, 5001)]
    with client.pipeline() as pipe:
        for r in readings:
            pipe.xadd(keys.readings, {"v": r.value, "t": repr(r.ts)}, id=f"{r.seq}-0")
        pipe.set(keys.seq, 5000)
        pipe.execute()
    caplog.set_level("INFO")
    with mock.patch("randstream.redis_tiers.BUILD_CHUNK", 700):
        first = new_store(redis_server.url)
    assert "rollup tiers built from 5000 readings stored before them" in caplog.text
    assert first.lease.claim(5000).leading
    more = Reading(5001, 3, readings[-1].ts + 1)
    first.append(more, {})
    readings.append(more)
    caplog.clear()
    second = new_store(redis_server.url)
    assert "rollup tiers built" not in caplog.text
    frm, to = START, readings[-1].ts + 1
    for points in (1, 300, 2000):
        for store in (first, second):
            body = store.series(frm, to, points, 1.0)
            check(body, readings, points, 1.0)
            assert sum(b["count"] for b in body["buckets"]) == 5001


def test_the_tiers_hold_floats_ints_and_extremes_as_written(redis_server):
    store = new_store(redis_server.url)
    store.lease.claim(0)
    values = [0.1 + 0.2, 3.0, 3, -1e-07, 2**53, -0.0, 2.5, 2.0**53, -(2**53)]
    readings = [Reading(seq, v, START + seq) for seq, v in enumerate(values, 1)]
    for r in readings:
        store.append(r, {})
    for points in (1, 2000):  # per hour, raw
        body = store.series(START, START + 60, points, 1.0)
        check(body, readings, points, 1.0)
    body = store.series(START, START + 60, 1, 1.0)
    [bucket] = body["buckets"]
    assert (bucket["min"], bucket["max"]) == (-(2**53), 2**53)
    assert type(bucket["min"]) is int and type(bucket["max"]) is int


def test_the_seqs_of_a_range_for_its_csv(redis_server):
    store = new_store(redis_server.url)
    store.lease.claim(0)
    readings = [Reading(seq, seq, START + seq * 7.0) for seq in range(1, 201)]
    for r in readings:
        store.append(r, {})
    lo, hi = store.seq_span(START + 300, float("inf"))
    assert lo <= 43 and hi == 200  # the minute holding ts START + 300 starts at seq 43 or before
    lo, hi = store.seq_span(0.0, START + 100)
    assert lo == 1 and hi >= 14
    assert store.seq_span(START + 2000, START + 2001) is None


# --- real server processes --------------------------------------------------------------------

# Reads while the file named by $SERIES_FLAG exists: readings stop when the test says so.
GATED = """
import os


def read():
    if os.path.exists(os.environ["SERIES_FLAG"]):
        global n
        n = globals().get("n", 0) + 1
        return n % 9 + (0.25 if n % 2 else 0)
    return None
"""


def redis_readings(redis_server) -> list[Reading]:
    client = connect(redis_server.url)
    entries = client.xrange(Keys.with_prefix().readings)
    return [Reading(int(i.split(b"-")[0]), redis_tiers.number(f[b"v"]), float(f[b"t"]))
            for i, f in entries]


def test_every_process_answers_from_the_same_tiers_after_the_leader_is_killed(
        cluster, redis_server, tmp_path, monkeypatch):
    flag = tmp_path / "go"
    flag.touch()
    (tmp_path / "gated.py").write_text(GATED)
    monkeypatch.setenv("SERIES_FLAG", str(flag))
    servers = cluster(2, "--source", f"{tmp_path / 'gated.py'}:read")
    wait_until(lambda: len(redis_readings(redis_server)) >= 30)

    def settled() -> list[Reading]:
        """The readings, once the source has stopped (none new for a second)."""
        flag.unlink(missing_ok=True)
        last: list[list[Reading]] = [[]]

        def same_as_a_second_ago():
            now = redis_readings(redis_server)
            same, last[0] = now == last[0], now
            return same

        wait_until(same_as_a_second_ago, timeout=30, step=1.0)
        return last[0]

    def agree(alive, readings):
        first, last = readings[0].ts, readings[-1].ts
        for frm, points in ((first - 7200, 2), (first - 60, 2000), (first, 2000)):
            query = f"/api/series?from={frm:.6f}&to={last + 1:.6f}&points={points}"
            bodies = [s.get(query)[1] for s in alive]
            assert all(b == bodies[0] for b in bodies)
            check(bodies[0], readings, points, 0.2)
            assert sum(b["count"] for b in bodies[0]["buckets"]) == len(readings)

    readings = settled()
    agree(servers, readings)
    leader = next(i for i, s in enumerate(servers)
                  if s.get("/healthz")[1]["source"]["calls"] > 0)
    servers[leader].proc.send_signal(signal.SIGKILL)
    servers[leader].proc.wait(10)
    alive = [servers[1 - leader]]
    flag.touch()
    wait_until(lambda: len(redis_readings(redis_server)) >= len(readings) + 20)
    readings = settled()
    seqs = [r.seq for r in readings]
    assert seqs == sorted(set(seqs))
    agree(alive, readings)
