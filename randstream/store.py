"""SQLite store: readings and the stats state survive restarts."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time

from . import schema, series
from .history import Reading, StoreError, new_stream_id
from .rollups import TRIM_EVERY, SqliteTiers

log = logging.getLogger(__name__)


CHECK_EVERY = 5.0  # seconds between checks that the database file is still the one open


class SqliteStore:
    """One connection, serialised by a lock; WAL, so a killed process loses no committed write.

    A database file deleted or replaced while open (rm, a restore, a bad deploy) would go
    on taking writes that nobody can read again, and the next start would begin at seq 1.
    So every CHECK_EVERY seconds an append compares the path's inode with the open file's;
    on a mismatch the store opens the path afresh (a new file if it is gone), writes the
    seq high-water mark into it and goes on: seq is never reused. The readings before are
    not in the new file, so `problem` stays set (/healthz 503) until a restart, and the new
    file gets a stream id of its own: after the restart its readings are another stream's.
    """

    def __init__(self, path: str, retention: int, keep: dict[int, float] | None = None) -> None:
        self.path = path
        self.retention = retention
        self.problem: str | None = None  # sticky: the file was swapped under us
        self._lock = threading.Lock()
        self._appends = 0
        self._checked = time.monotonic()
        # Seconds of rows per rollup tier (--minute-tier-days, --hour-tier-days).
        self.tiers = SqliteTiers(keep or {series.MINUTE: 90 * series.DAY,
                                          series.HOUR: 730 * series.DAY})
        self._db = self._open()
        self._identity = self._file_identity()
        self.stream_id = self._stream_id()

    def _open(self) -> sqlite3.Connection:
        path = self.path
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            if path != ":memory:":
                db.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode survives a process crash; only power loss can undo commits.
                db.execute("PRAGMA synchronous=NORMAL")
            schema.migrate(db, path)
            self.tiers.load(db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        return db

    def _stream_id(self) -> str:
        rows = self._query("SELECT value FROM meta WHERE key = 'stream'")
        if rows:  # no write when it is there: a read-only file still starts, as before
            return rows[0][0]
        # The schema gives every database one; a row deleted by hand makes it another stream.
        self._query("INSERT OR IGNORE INTO meta (key, value) VALUES ('stream', ?)",
                    (new_stream_id(),))
        return self._query("SELECT value FROM meta WHERE key = 'stream'")[0][0]

    def _file_identity(self) -> tuple[int, int] | None:
        if self.path == ":memory:" or self.path.startswith("file:"):
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return (-1, -1)
        return (st.st_dev, st.st_ino)

    def _check_file(self, seq: int) -> None:
        """Reopen the path if the open file is no longer the one there (called under the lock)."""
        now = time.monotonic()
        if self._identity is None or now - self._checked < CHECK_EVERY:
            return
        self._checked = now
        if self._file_identity() == self._identity:
            return
        self.problem = (f"database file {self.path} was deleted or replaced while in use; "
                        f"continuing in a new file from seq {seq}, earlier readings are not "
                        "in it (restart to clear this)")
        log.warning("%s", self.problem)
        old = self._db
        self._db = self._open()
        self._identity = self._file_identity()
        try:
            old.close()
        except sqlite3.Error:
            pass
        # The high-water mark first: even if no reading is ever stored here, a restart
        # continues after the seqs already handed out.
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT(key) DO UPDATE "
            "SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            (str(seq - 1),),
        )
        # Neither this stream (its earlier readings are not here) nor the file's own (ours
        # follow its readings): a client holding either must not resume into it.
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('stream', ?)",
                         (new_stream_id(),))

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
        trim = self._appends % TRIM_EVERY == 0  # retention is enforced in batches, not per tick
        try:
            with self._lock:
                self._check_file(reading.seq)
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute("INSERT INTO readings (seq, value, ts) VALUES (?, ?, ?)", reading)
                    db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES "
                        "('stats', ?), ('last_seq', ?)",
                        (json.dumps(stats_state), str(reading.seq)),
                    )
                    rolled = self.tiers.write(db, reading, trim)
                    if trim:
                        db.execute(
                            "DELETE FROM readings WHERE seq <= ?", (reading.seq - self.retention,)
                        )
                    db.execute("COMMIT")
                    rolled(reading)
                except BaseException:
                    # SQLite has already rolled back after some errors (a full disk); a
                    # ROLLBACK then fails and would hide the error that matters.
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def series(self, frm: float, to: float, points: int, interval: float) -> dict:
        """The /api/series answer (series.py), from one view of the tiers."""
        try:
            with self._lock:
                return series.answer(self.tiers.reader(self._db), frm, to, points, interval)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def seq_span(self, frm: float, to: float) -> tuple[int, int] | None:
        """The seqs to read for the readings with frm <= ts < to (None: there are none)."""
        try:
            with self._lock:
                reader = self.tiers.reader(self._db)
                if reader.since(series.MINUTE) > frm:  # their rows are gone: read from the oldest
                    return (reader.oldest_seq() or 1, self.last_seq_unlocked())
                return reader.seq_span(frm, to)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def last_seq_unlocked(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM readings").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            try:  # what the tiers hold in memory, so the next start has nothing to fold
                self.tiers.flush(self._db, self.last_seq_unlocked())
            except sqlite3.Error as exc:
                log.warning("%s: rollups not written at close (the next start folds them "
                            "from the readings): %s", self.path, exc)
            self._db.close()
