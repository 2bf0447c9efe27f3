"""The SQLite schema, versioned: each step moves a database one version up, at start.

The version is SQLite's own `PRAGMA user_version` (0 for databases from before versions).
Every database walks the same path: the version-0 tables, then each step above its
version, each step with its version bump in one transaction. A process killed mid-step
(kill -9, power) leaves the database as it was before that step; the next start does the
step again. A later step (say, rollup tables for long-range history) is one more function
at the end of STEPS, given the connection inside its transaction.
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


STEPS: tuple[Callable[[sqlite3.Connection], None], ...] = (exact_values_and_stream_id,)
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
