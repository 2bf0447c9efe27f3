"""The SQLite schema's versions: values keep their type, old databases move up once, a
migration killed midway leaves the database as it was, the stream id is made and kept."""

from __future__ import annotations

import json
import math
import re
import signal
import sqlite3
import subprocess
import sys

import pytest
from conftest import ROOT

from randstream import schema
from randstream.history import Reading, StoreError
from randstream.store import SqliteStore

# The tables as every database had them before schema versions (user_version 0).
OLD_DDL = """
CREATE TABLE readings (seq INTEGER PRIMARY KEY, value INTEGER NOT NULL, ts REAL NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

VALUES = [3.0, 2.5, 7, -0.0, 2**53, -(2**53), 0.1 + 0.2, 1e300, 2.0**53]


def old_database(path, count: int, last_seq: int | None = None) -> list[Reading]:
    """A database as the code before schema versions made it: `count` readings (an int, a
    float every third), the stats and the seq high-water mark in meta."""
    readings = [Reading(seq, seq + 0.5 if seq % 3 == 0 else seq % 101, 1000.0 + seq)
                for seq in range(1, count + 1)]
    db = sqlite3.connect(path)
    db.executescript(OLD_DDL)
    db.executemany("INSERT INTO readings (seq, value, ts) VALUES (?, ?, ?)", readings)
    db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
        ("stats", json.dumps({"kind": "http", "count": count})),
        ("last_seq", str(last_seq if last_seq is not None else count)),
    ])
    db.commit()
    db.close()
    return readings


def kinds(values) -> list[tuple[type, float]]:
    """Each value's type and sign: -0.0 is not 0.0 here, nor 3.0 3."""
    return [(type(v), math.copysign(1, v)) for v in values]


def test_ints_and_floats_come_back_as_they_were_stored(tmp_path):
    """Fails before: `value INTEGER` turned 3.0 (and -0.0, and 2.0**53) into an int."""
    path = str(tmp_path / "s.sqlite3")
    store = SqliteStore(path, retention=1000)
    for seq, value in enumerate(VALUES, 1):
        store.append(Reading(seq, value, float(seq)), {})
    store.close()
    back = [r.value for r in SqliteStore(path, retention=1000).after(0, 100)]
    assert back == VALUES and kinds(back) == kinds(VALUES)


def test_an_old_database_moves_up_once_keeping_every_reading_and_the_seq_mark(tmp_path, caplog):
    path = str(tmp_path / "old.sqlite3")
    readings = old_database(path, 2500, last_seq=2600)  # rows past 2500 trimmed, say
    caplog.set_level("INFO")
    store = SqliteStore(path, retention=10_000)
    assert store.after(0, 10_000) == readings
    assert kinds(r.value for r in store.after(0, 10_000)) == kinds(r.value for r in readings)
    assert store.last_seq() == 2600 and store.stats_state() == {"kind": "http", "count": 2500}
    assert re.fullmatch("[0-9a-f]{16}", store.stream_id)
    assert f"schema version 0 -> {schema.VERSION}, 2500 readings" in caplog.text
    store.append(Reading(2601, 3.0, 1.0), {})  # the new column keeps a float a float
    store.close()

    caplog.clear()
    again = SqliteStore(path, retention=10_000)
    assert again.stream_id == store.stream_id, "the id is made once, then kept"
    assert again.latest(1) == [Reading(2601, 3.0, 1.0)] and type(again.latest(1)[0].value) is float
    assert "schema version" not in caplog.text, "moved up once"
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION
    assert db.execute("SELECT type FROM pragma_table_info('readings') WHERE name = 'value'"
                      ).fetchone()[0] == ""


def test_new_databases_and_memory_get_a_stream_id_each(tmp_path):
    ids = {SqliteStore(":memory:", retention=10).stream_id for _ in range(3)}
    ids |= {SqliteStore(str(tmp_path / f"{n}.sqlite3"), retention=10).stream_id for n in range(3)}
    assert len(ids) == 6 and all(re.fullmatch("[0-9a-f]{16}", i) for i in ids)


def test_a_database_swapped_under_a_running_store_becomes_another_stream(tmp_path, monkeypatch):
    monkeypatch.setattr("randstream.store.CHECK_EVERY", 0.0)
    path = tmp_path / "s.sqlite3"
    store = SqliteStore(str(path), retention=100)
    store.append(Reading(1, 1, 1.0), {})
    other = SqliteStore(str(tmp_path / "other.sqlite3"), retention=100)
    other.append(Reading(1, 9, 1.0), {})
    other.close()
    (tmp_path / "other.sqlite3").replace(path)
    store.append(Reading(2, 2, 2.0), {})  # into the file now at the path
    assert store.problem
    store.close()
    ids = {store.stream_id, other.stream_id, SqliteStore(str(path), retention=100).stream_id}
    assert len(ids) == 3, "neither this stream's readings alone nor the other's"


def test_a_database_from_a_newer_version_is_refused_in_one_line(tmp_path):
    path = str(tmp_path / "s.sqlite3")
    SqliteStore(path, retention=10).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {schema.VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match=f"schema version {schema.VERSION + 1}, newer than"):
        SqliteStore(path, retention=10)


# Opens the database as SqliteStore does and has the process SIGKILL itself from inside
# SQLite, once a migration step's transaction is open and its copy is under way.
KILL_MIDWAY = """
import os, signal, sqlite3, sys
sys.path.insert(0, sys.argv[2])
from randstream import schema
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
calls = 0
def progress():
    global calls
    if db.in_transaction:
        calls += 1
        if calls == 20:
            os.kill(os.getpid(), signal.SIGKILL)
    return 0
db.set_progress_handler(progress, 1000)
schema.migrate(db, sys.argv[1])
print("migrated: not killed")
"""


def test_a_migration_killed_midway_leaves_the_old_database_whole(tmp_path):
    path = str(tmp_path / "old.sqlite3")
    readings = old_database(path, 20_000, last_seq=20_007)
    killed = subprocess.run([sys.executable, "-c", KILL_MIDWAY, path, str(ROOT)],
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"readings", "meta"}, "no half-made table left behind"
    assert db.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 20_000
    db.close()

    store = SqliteStore(path, retention=100_000)  # the next start does the step again
    assert store.after(0, 100_000) == readings
    assert store.last_seq() == 20_007


def version_1_database(path, readings: list[Reading]) -> None:
    """A database as schema version 1 made them (before rollup tiers)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(schema.V0)
    db.execute("BEGIN")
    schema.exact_values_and_stream_id(db)
    db.executemany("INSERT INTO readings (seq, value, ts) VALUES (?, ?, ?)", readings)
    db.execute("INSERT INTO meta (key, value) VALUES ('last_seq', ?)", (str(readings[-1].seq),))
    db.execute("PRAGMA user_version = 1")
    db.execute("COMMIT")
    db.close()


def test_a_database_from_before_tiers_gets_its_rollups_built_once(tmp_path, caplog):
    """Every reading is in the per-minute and per-hour rows after the step, once: answers
    from each tier add up to the readings (a second build, or a fold of readings already
    built, would double them)."""
    from test_series import START, check

    path = str(tmp_path / "v1.sqlite3")
    readings = [Reading(seq, seq % 17 if seq % 2 else seq * 0.25, START + seq * 7.3 - 300)
                for seq in range(1, 3001)]  # 6 hours, from 5 minutes before a whole hour
    version_1_database(path, readings)
    caplog.set_level("INFO")
    store = SqliteStore(path, retention=10_000)
    assert "schema version 1 -> 2, 3000 readings" in caplog.text
    rows = dict(sqlite3.connect(path).execute("SELECT tier, COUNT(*) FROM rollups GROUP BY tier"))
    assert rows == {60: len({int(r.ts // 60) for r in readings}),
                    3600: len({int(r.ts // 3600) for r in readings})}
    frm, to = START - 3600, START + 7 * 3600

    def answers_add_up(store):
        for points, tier_step in ((8, 3600.0), (480, 60.0), (2000, 15.0)):
            body = store.series(frm, to, points, 1.0)
            assert body["step"] == tier_step
            check(body, readings, points, 1.0)
            assert sum(b["count"] for b in body["buckets"]) == 3000

    answers_add_up(store)
    store.append(Reading(3001, 5, readings[-1].ts + 1), {})
    readings.append(Reading(3001, 5, readings[-1].ts + 1))
    store.close()
    caplog.clear()
    again = SqliteStore(path, retention=10_000)
    assert "schema version" not in caplog.text, "built once"
    readings.pop()
    with pytest.raises(AssertionError):
        answers_add_up(again)  # reading 3001 is there too
    readings.append(Reading(3001, 5, readings[-1].ts + 1))
    for points in (8, 480, 2000):
        check(again.series(frm, to, points, 1.0), readings, points, 1.0)
    again.close()
