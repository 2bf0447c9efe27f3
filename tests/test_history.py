"""The history: ring for the hot path, SQLite behind it, retention and restarts."""

import logging

import pytest

from randstream.history import History, Reading, Ring
from randstream.store import SqliteStore


def readings(first, last):
    return [Reading(seq, seq % 101, 1000.0 + seq) for seq in range(first, last + 1)]


def test_ring_keeps_the_latest_in_order():
    ring = Ring(5)
    ring.extend(readings(1, 12))
    assert [r.seq for r in ring.latest(10)] == [8, 9, 10, 11, 12]
    assert [r.seq for r in ring.latest(2)] == [11, 12]
    assert ring.latest(0) == []


def test_ring_ignores_stale_and_duplicate_readings():
    ring = Ring(10)
    ring.extend(readings(1, 3))
    ring.extend(readings(2, 5))
    assert [r.seq for r in ring.latest(10)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("after, limit, expected", [
    (0, 100, list(range(1, 11))), (7, 100, [8, 9, 10]), (3, 2, [4, 5]),
    (10, 5, []), (99, 5, []),
])
def test_ring_after(after, limit, expected):
    ring = Ring(10)
    ring.extend(readings(1, 10))
    assert [r.seq for r in ring.after(after, limit)] == expected


def test_history_reads_old_readings_from_the_store():
    store = SqliteStore(":memory:", retention=1000)
    for r in readings(1, 100):
        store.append(r, {})
    history = History(store, ring_size=10)
    assert history.last_seq == 100
    assert [r.seq for r in history.latest(3)] == [98, 99, 100]
    # seq 5.. is older than the ring: it comes from SQLite, then joins the ring seamlessly.
    assert [r.seq for r in history.after(4, 3)] == [5, 6, 7]
    assert [r.seq for r in history.after(85, 100)] == list(range(86, 101))


def test_retention_trims_the_store_in_batches():
    store = SqliteStore(":memory:", retention=50)
    for r in readings(1, 2000):
        store.append(r, {})
    kept = store.after(0, 10_000)
    assert kept[-1].seq == 2000
    assert 50 <= len(kept) <= 1050  # trimmed every 1000 appends
    assert store.last_seq() == 2000


def test_seq_and_stats_survive_reopening(tmp_path):
    path = str(tmp_path / "s.sqlite3")
    store = SqliteStore(path, retention=1000)
    for r in readings(1, 5):
        store.append(r, {"count": r.seq})
    store.close()
    store = SqliteStore(path, retention=1000)
    assert store.last_seq() == 5
    assert store.stats_state() == {"count": 5}
    assert store.latest(2) == readings(4, 5)


def test_last_seq_is_never_reused_even_if_rows_are_gone(tmp_path):
    store = SqliteStore(str(tmp_path / "s.sqlite3"), retention=1000)
    for r in readings(1, 5):
        store.append(r, {})
    store._query("DELETE FROM readings")
    assert store.last_seq() == 5


def test_a_failing_store_is_flagged_then_recovers(caplog):
    caplog.set_level(logging.INFO)
    store = SqliteStore(":memory:", retention=1000)
    history = History(store, ring_size=10)
    store._query("CREATE TRIGGER full BEFORE INSERT ON readings BEGIN "
                 "SELECT RAISE(FAIL, 'database or disk is full'); END")
    history.append(Reading(1, 7, 1.0), {})
    history.append(Reading(2, 8, 2.0), {})
    assert "disk is full" in history.store_error
    assert history.store_errors == 2
    assert [r.seq for r in history.latest(5)] == [1, 2]  # the live stream goes on
    assert caplog.text.count("store failed") == 1  # logged once, not per tick
    store._query("DROP TRIGGER full")
    history.append(Reading(3, 9, 3.0), {})
    assert history.store_error is None
    assert "store recovered" in caplog.text
