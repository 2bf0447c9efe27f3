"""Time the one-time schema migration of an existing database, at start.

    .venv/bin/python bench/migrate.py                     # 1,000,000 readings
    .venv/bin/python bench/migrate.py --readings 100000 --keep /tmp/old.sqlite3

Makes a database as the code before schema versions did (user_version 0, `value INTEGER`,
readings at 1 Hz ending now, every third a float), then opens it as the server does
(randstream.store.SqliteStore: the migration runs there, in one transaction per step) and
prints how long that took, and how long the next open takes (nothing left to migrate).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from randstream import schema  # noqa: E402
from randstream.store import SqliteStore  # noqa: E402

OLD_DDL = """
CREATE TABLE readings (seq INTEGER PRIMARY KEY, value INTEGER NOT NULL, ts REAL NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def make_old_database(path: str, count: int) -> float:
    """An old-schema database of `count` readings; seconds it took."""
    started = time.perf_counter()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(OLD_DDL)
    end = time.time()
    db.executemany(
        "INSERT INTO readings (seq, value, ts) VALUES (?, ?, ?)",
        ((seq, seq * 0.5 if seq % 3 == 0 else seq % 101, end - count + seq)
         for seq in range(1, count + 1)),
    )
    db.execute("INSERT INTO meta (key, value) VALUES ('last_seq', ?)", (str(count),))
    db.commit()
    db.close()
    return time.perf_counter() - started


def timed_open(path: str) -> tuple[float, SqliteStore]:
    started = time.perf_counter()
    store = SqliteStore(path, retention=10**9)
    return time.perf_counter() - started, store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--keep", help="make the database here and keep it (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or os.path.join(tmp, "old.sqlite3")
        made = make_old_database(path, args.readings)
        size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        migrated, store = timed_open(path)
        last = store.last_seq()
        store.close()
        again, store = timed_open(path)
        store.close()
    print(f"readings            {args.readings:,} (old schema, {size / 1e6:.0f} MB, made in {made:.2f} s)")
    print(f"first open          {migrated:.2f} s (schema 0 -> {schema.VERSION}; last seq {last:,})")
    print(f"next open           {again * 1000:.1f} ms (nothing to migrate)")


if __name__ == "__main__":
    main()
