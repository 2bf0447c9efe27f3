"""SQLite's rollup tiers: per-minute and per-hour count, min, max and sum, kept as readings arrive.

Netdata's way: beside the raw readings, each tier keeps one row per bucket, so an answer
over a week reads ~10,000 per-minute rows instead of ~600,000 readings. The table (made
by schema.rollups_step):

    rollups (tier, t, n, vmin, vmax, vsum, seq_lo, seq_hi), primary key (tier, t)

A tick writes no row. The buckets a reading falls in are kept in memory (Pending) and
written when a reading arrives in another bucket (once a minute, once an hour), and every
TRIM_EVERY readings with the store's retention trim, each time in the transaction that
stores the reading. meta `rolled:<tier>` says up to which seq the rows hold every reading;
after a kill -9 the start folds the readings after it into memory again (load()), at most
TRIM_EVERY readings or one bucket's, from raw rows that are still there: the trim keeps
every reading after `rolled`. meta `since:<tier>` says from which ts on a tier is whole
(rows older than its retention are deleted, in the same batches).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

from .history import Reading
from .series import TIERS, bucket_start, edge, fold, inverse, new_rollup

TRIM_EVERY = 1000  # readings between retention trims (and writes of every open bucket)

UPSERT = """
INSERT INTO rollups (tier, t, n, vmin, vmax, vsum, seq_lo, seq_hi) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tier, t) DO UPDATE SET
    n = n + excluded.n, vmin = MIN(vmin, excluded.vmin), vmax = MAX(vmax, excluded.vmax),
    vsum = vsum + excluded.vsum, seq_lo = MIN(seq_lo, excluded.seq_lo),
    seq_hi = MAX(seq_hi, excluded.seq_hi)
"""


def raw_bucket_sql(step: float) -> tuple[str, str]:
    """series.index() in SQL over a row's ts: a guess `g`, then the bucket `k` from it, by the
    same float operations as edge(), so a reading falls in the same bucket in every tier."""
    n = inverse(step)
    if n:
        guess, edge_of = f"CAST(ts * {n} AS INTEGER)", lambda k: f"(({k}) / {float(n)!r})"
    else:
        guess, edge_of = f"CAST(ts / {step} AS INTEGER)", lambda k: f"(({k}) * {step})"
    return guess, f"g - ({edge_of('g')} > ts) + ({edge_of('g + 1')} <= ts)"


class Pending:
    """One tier's buckets not yet in its rows: the readings after seq `rolled`."""

    def __init__(self, width: int, rolled: int) -> None:
        self.width = width
        self.rolled = rolled
        self.buckets: dict[int, list] = {}
        self.open: list | None = None  # the bucket of the newest reading, and its start
        self.open_t: int | None = None

    def add(self, reading: Reading) -> None:
        seq, value, ts = reading
        t = self.open_t
        if t is not None and t <= ts < t + self.width:
            fold(self.open, value, seq)
            return
        t = bucket_start(ts, self.width)
        rollup = self.buckets.get(t)
        if rollup is None:
            rollup = self.buckets[t] = new_rollup(value, seq)
        else:
            fold(rollup, value, seq)
        self.open, self.open_t = rollup, t

    def fits(self, ts: float) -> bool:
        """Whether a reading at `ts` goes into a bucket held here (or starts the first)."""
        t = self.open_t
        if t is not None and t <= ts < t + self.width:
            return True
        return not self.buckets or bucket_start(ts, self.width) in self.buckets

    def clear(self, rolled: int) -> None:
        self.buckets, self.open, self.open_t, self.rolled = {}, None, None, rolled

    def rows(self) -> list[tuple]:
        return [(self.width, t, *r) for t, r in self.buckets.items()]


class SqliteTiers:
    """The tiers of one open database; its methods run under the store's lock."""

    def __init__(self, keep: dict[int, float]) -> None:
        self.keep = keep  # seconds of rows each tier keeps
        self.pending: dict[int, Pending] = {}
        self.since: dict[int, float] = {}

    def load(self, db: sqlite3.Connection) -> None:
        """What the rows hold, and the readings after (a kill -9's) back into memory."""
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'rolled:%' "
                               "OR key LIKE 'since:%'").fetchall())
        self.pending = {w: Pending(w, int(meta.get(f"rolled:{w}", 0))) for w in TIERS}
        self.since = {w: float(meta.get(f"since:{w}", "-inf")) for w in TIERS}
        oldest = min(p.rolled for p in self.pending.values())
        for reading in db.execute("SELECT seq, value, ts FROM readings WHERE seq > ? ORDER BY seq",
                                  (oldest,)):
            for p in self.pending.values():
                if reading[0] > p.rolled:
                    p.add(Reading(*reading))

    def write(self, db: sqlite3.Connection, reading: Reading, trim: bool) -> Callable[[], None]:
        """In the transaction that stores `reading`: write what must be written; returns what to
        do in memory once it commits (nothing changes here if it does not)."""
        flushed = []
        for p in self.pending.values():
            if trim or not p.fits(reading.ts):
                flushed.append(p)
                db.executemany(UPSERT, p.rows())
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           (f"rolled:{p.width}", str(reading.seq - 1)))
        if trim:
            cut = self._trim(db, reading.ts)
        if not flushed:
            return lambda: [p.add(reading) for p in self.pending.values()]

        def done() -> None:
            for p in self.pending.values():
                if p in flushed:
                    p.clear(reading.seq - 1)
                p.add(reading)
            if trim:
                self.since.update(cut)
        return done

    def _trim(self, db: sqlite3.Connection, now: float) -> dict[int, float]:
        cut = {}
        for w in self.pending:
            cutoff = bucket_start(now - self.keep[w], w)
            if db.execute("DELETE FROM rollups WHERE tier = ? AND t < ?", (w, cutoff)).rowcount:
                cut[w] = max(self.since[w], float(cutoff))
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           (f"since:{w}", repr(cut[w])))
        return cut

    def flush(self, db: sqlite3.Connection, last_seq: int) -> None:
        """Every bucket held in memory into its row (at a clean stop; in its own transaction)."""
        if not any(p.buckets for p in self.pending.values()):
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for p in self.pending.values():
                db.executemany(UPSERT, p.rows())
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           (f"rolled:{p.width}", str(last_seq)))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        for p in self.pending.values():
            p.clear(last_seq)

    def reader(self, db: sqlite3.Connection) -> SqliteReader:
        return SqliteReader(db, self)


class SqliteReader:
    """series.TierReader over one connection and the buckets in memory (under the lock)."""

    def __init__(self, db: sqlite3.Connection, tiers: SqliteTiers) -> None:
        self.db = db
        self.tiers = tiers

    def since(self, tier: int) -> float:
        return self.tiers.since[tier]

    def seq_span(self, frm: float, to: float) -> tuple[int, int] | None:
        w = TIERS[0]
        lo, hi = self.db.execute(
            "SELECT MIN(seq_lo), MAX(seq_hi) FROM rollups WHERE tier = ? AND t > ? AND t < ?",
            (w, frm - w, to)).fetchone()
        for t, r in self.tiers.pending[w].buckets.items():
            if frm - w < t < to:
                lo = r[4] if lo is None else min(lo, r[4])
                hi = r[5] if hi is None else max(hi, r[5])
        return None if lo is None else (lo, hi)

    def oldest_seq(self) -> int | None:
        return self.db.execute("SELECT MIN(seq) FROM readings").fetchone()[0]

    def rollups(self, tier: int, step: float, first: int, last: int) -> list[tuple]:
        a, b = int(edge(first, step)), int(edge(last, step))
        step = int(step)
        rows = self.db.execute(
            "SELECT t / ? AS k, SUM(n), MIN(vmin), MAX(vmax), TOTAL(vsum) FROM rollups "
            "WHERE tier = ? AND t >= ? AND t < ? GROUP BY k", (step, tier, a, b)).fetchall()
        rows += [(t // step, *r[:4]) for t, r in self.tiers.pending[tier].buckets.items()
                 if a <= t < b]
        return rows

    def raw(self, step: float, first: int, last: int, lo: int, hi: int) -> Iterable[tuple]:
        guess, k = raw_bucket_sql(step)
        return self.db.execute(
            f"SELECT {k} AS k, COUNT(*), MIN(value), MAX(value), TOTAL(value) FROM ("
            f"SELECT value, ts, {guess} AS g FROM readings "
            "WHERE seq BETWEEN ? AND ? AND ts >= ? AND ts < ?) GROUP BY k",
            (lo, hi, edge(first, step), edge(last, step))).fetchall()
