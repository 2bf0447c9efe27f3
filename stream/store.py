"""SQLite store: readings and the stats state survive restarts."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading

from .history import Reading, StoreError

log = logging.getLogger(__name__)

SCHEMA = """
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


class SqliteStore:
    """One connection, serialised by a lock; WAL, so a killed process loses no committed write."""

    def __init__(self, path: str, retention: int) -> None:
        self.path = path
        self.retention = retention
        self._lock = threading.Lock()
        self._appends = 0
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode survives a process crash; only power loss can undo commits.
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def latest(self, n: int) -> list[Reading]:
        rows = self._query("SELECT seq, value, ts FROM readings ORDER BY seq DESC LIMIT ?", (n,))
        return [Reading(*row) for row in reversed(rows)]

    def after(self, seq: int, limit: int) -> list[Reading]:
        rows = self._query(
            "SELECT seq, value, ts FROM readings WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [Reading(*row) for row in rows]

    def last_seq(self) -> int:
        rows = self._query("SELECT value FROM meta WHERE key = 'last_seq'")
        stored = int(rows[0][0]) if rows else 0
        newest = self._query("SELECT MAX(seq) FROM readings")[0][0] or 0
        return max(stored, newest)

    def stats_state(self) -> dict | None:
        rows = self._query("SELECT value FROM meta WHERE key = 'stats'")
        return json.loads(rows[0][0]) if rows else None

    def append(self, reading: Reading, stats_state: dict) -> None:
        """The reading, the stats and the seq high-water mark in one transaction."""
        self._appends += 1
        trim = self._appends % 1000 == 0  # retention is enforced in batches, not per tick
        try:
            with self._lock:
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute("INSERT INTO readings (seq, value, ts) VALUES (?, ?, ?)", reading)
                    db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES "
                        "('stats', ?), ('last_seq', ?)",
                        (json.dumps(stats_state), str(reading.seq)),
                    )
                    if trim:
                        db.execute(
                            "DELETE FROM readings WHERE seq <= ?", (reading.seq - self.retention,)
                        )
                    db.execute("COMMIT")
                except BaseException:
                    # SQLite has already rolled back after some errors (a full disk); a
                    # ROLLBACK then fails and would hide the error that matters.
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
