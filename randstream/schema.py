"""The SQLite schema, versioned: each step moves a database one version up, at start.

The version is SQLite's own `PRAGMA user_version` (0 for databases from before versions).
Every database walks the same path: the version-0 tables, then each step above its
version, each step with its version bump in one transaction. A process killed mid-step
(kill -9, power) leaves the database as it was before that step; the next start does the
step again. A later step is one more function at the end of STEPS, given the connection inside its
transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from .history import StoreError, new_stream_id

log = logging.getLogger(__name__)

# Version 0, as databases were made before versions: a start on one moves it up from here.
V0 = """
CREATE TABLE IF NOT EXISTS readings (
    seq INTEGER PRIMARY KEY,
    value INTEGER NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def exact_values_and_stream_id(db: sqlite3.Connection) -> None:
    """1: `value` without a type, so a float stays a float (3.0 is not 3) and an int an int;
    and the stream's id in meta (a database from before gets one now).

    SQLite cannot change a column's type in place: the rows are copied to a new table
    (0.4-0.5 s per million readings: bench/migrate.py). Floats stored before this step
    that were whole numbers are integers by now; what was stored is kept as it is.
    """
    db.execute("CREATE TABLE readings_v1 (seq INTEGER PRIMARY KEY, value NOT NULL, ts REAL NOT NULL)")
    db.execute("INSERT INTO readings_v1 (seq, value, ts) SELECT seq, value, ts FROM readings")
    db.execute("DROP TABLE readings")
    db.execute("ALTER TABLE readings_v1 RENAME TO readings")
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('stream', ?)", (new_stream_id(),))


def rollup_tiers(db: sqlite3.Connection) -> None:
    """2: the per-minute and per-hour rollups (rollups.py), built once from the readings there.

    Per-minute rows from the readings in one GROUP BY (the bucket as series.index() gives
    it: the truncated quotient, one less where it overshoots), per-hour rows from those;
    1,000,000 readings: see bench/series.py. `rolled:<tier>` is the newest seq, so nothing
    is folded twice after.
    """
    db.execute("""CREATE TABLE rollups (
        tier INTEGER NOT NULL, t INTEGER NOT NULL, n INTEGER NOT NULL, vmin NOT NULL,
        vmax NOT NULL, vsum REAL NOT NULL, seq_lo INTEGER NOT NULL, seq_hi INTEGER NOT NULL,
        PRIMARY KEY (tier, t)) WITHOUT ROWID""")
    db.execute("""INSERT INTO rollups
        SELECT 60, m * 60, COUNT(*), MIN(value), MAX(value), TOTAL(value), MIN(seq), MAX(seq)
        FROM (SELECT seq, value, CAST(ts / 60 AS INTEGER) - (CAST(ts / 60 AS INTEGER) * 60 > ts)
              AS m FROM readings)
        GROUP BY m""")
    db.execute("""INSERT INTO rollups
        SELECT 3600, (t / 3600) * 3600, SUM(n), MIN(vmin), MAX(vmax), TOTAL(vsum), MIN(seq_lo),
               MAX(seq_hi)
        FROM rollups WHERE tier = 60 GROUP BY t / 3600""")
    newest = db.execute("SELECT COALESCE(MAX(seq), 0) FROM readings").fetchone()[0]
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                   [("rolled:60", str(newest)), ("rolled:3600", str(newest))])


STEPS: tuple[Callable[[sqlite3.Connection], None], ...] = (exact_values_and_stream_id,
                                                          rollup_tiers)
VERSION = len(STEPS)


def version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite3.Connection, path: str) -> None:
    """Bring the database at `path` (open as `db`, autocommit) to VERSION; StoreError if it is
    from a newer version of this program, or a step fails (it is then rolled back)."""
    found = version(db)
    if found > VERSION:
        raise StoreError(f"database {path} has schema version {found}, newer than this "
                         f"program's {VERSION}: run the newer version, or use another --db")
    if found == VERSION:
        return
    if found == 0:
        db.executescript(V0)
    started = time.perf_counter()
    readings = db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    for number, step in enumerate(STEPS, start=1):
        db.execute("BEGIN IMMEDIATE")  # the write lock: another process migrating waits here
        try:
            if version(db) < number:  # not done meanwhile by another process
                step(db)
                db.execute(f"PRAGMA user_version = {number}")  # part of this transaction
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    if readings:  # an existing database: worth a line; a new one is not
        log.info("database %s: schema version %d -> %d, %d readings, in %.2f s",
                 path, found, VERSION, readings, time.perf_counter() - started)
