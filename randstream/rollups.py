"""SQLite's rollup tiers: per-minute and per-hour count, min, max and sum, kept as readings arrive.

Netdata's way: beside the raw readings, each tier keeps one row per bucket, so an answer
over a week reads ~10,000 per-minute rows instead of ~600,000 readings. The table (made
by schema.rollups_step):

    rollups (tier, t, n, vmin, vmax, vsum, seq_lo, seq_hi), primary key (tier, t)

A tick writes no row, and folds its reading into one bucket in memory, its minute's. The
buckets in memory are written when a reading arrives in another minute (the closed
minutes then join their hour in memory, written when the hour is over) and every
TRIM_EVERY readings with the store's retention trim, each time in the transaction that
stores the reading. meta `rolled:<tier>` says up to which seq the rows hold every reading;
after a kill -9 the start folds the readings after it into memory again (load()), at most
TRIM_EVERY readings or an hour's, from raw rows that are still there: the trim keeps
every reading after `rolled`. meta `since:<tier>` says from which ts on a tier is whole
(rows older than its retention are deleted, in the same batches).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterable

from .history import Reading
from .series import HOUR, MINUTE, TIERS, bucket_start, edge, fold, inverse, merge, new_rollup

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


class SqliteTiers:
    """The tiers of one open database, and what of them is still in memory (under the lock).

    rolled:60 (`rolled[60]`): the per-minute rows hold exactly the readings up to it;
    `minutes` the ones after, per minute. rolled:3600 (never above rolled:60): the per-hour
    rows hold the readings up to it; `hours` the rest up to rolled:60, per hour (closed
    minutes are folded into their hour). So a reading touches one bucket in memory, and
    the per-hour answer adds `hours` and `minutes` to the rows.
    """

    def __init__(self, keep: dict[int, float]) -> None:
        self.keep = keep  # seconds of rows each tier keeps
        self.minutes: dict[int, list] = {}
        self.hours: dict[int, list] = {}
        self.open: list | None = None  # the newest reading's minute, in `minutes`
        self.open_t = -math.inf
        self.rolled = {MINUTE: 0, HOUR: 0}
        self.since = {MINUTE: -math.inf, HOUR: -math.inf}

    def load(self, db: sqlite3.Connection) -> None:
        """What the rows hold, and the readings after (a kill -9's) back into memory."""
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'rolled:%' "
                               "OR key LIKE 'since:%'").fetchall())
        self.rolled = {w: int(meta.get(f"rolled:{w}", 0)) for w in TIERS}
        self.since = {w: float(meta.get(f"since:{w}", "-inf")) for w in TIERS}
        self.minutes, self.hours, self.open, self.open_t = {}, {}, None, -math.inf
        for seq, value, ts in db.execute(
                "SELECT seq, value, ts FROM readings WHERE seq > ? ORDER BY seq",
                (min(self.rolled.values()),)):
            if seq > self.rolled[MINUTE]:
                self.add(Reading(seq, value, ts))
            else:
                add_to(self.hours, bucket_start(ts, HOUR), new_rollup(value, seq))

    def add(self, reading: Reading) -> None:
        """Fold a stored reading into its minute in memory."""
        seq, value, ts = reading
        t = bucket_start(ts, MINUTE)
        rollup = self.minutes.get(t)
        if rollup is None:
            rollup = self.minutes[t] = new_rollup(value, seq)
        else:
            fold(rollup, value, seq)
        self.open, self.open_t = rollup, t

    def fold_open(self, reading: Reading) -> None:
        fold(self.open, reading.value, reading.seq)

    def write(self, db: sqlite3.Connection, reading: Reading,
              trim: bool) -> Callable[[Reading], None]:
        """In the transaction that stores `reading`: write what must be written; returns what to
        do in memory once it commits (nothing changes here if it does not)."""
        t = self.open_t
        if t <= reading.ts < t + MINUTE and not trim:
            return self.fold_open  # the reading's minute is open: nothing to write
        seq, ts = reading.seq, reading.ts
        minutes, hours, rolled = self.minutes, self.hours, dict(self.rolled)
        if minutes and (trim or bucket_start(ts, MINUTE) not in minutes):
            db.executemany(UPSERT, [(MINUTE, t, *r) for t, r in minutes.items()])
            rolled[MINUTE] = seq - 1
            hours = {t: list(r) for t, r in hours.items()}
            for t, r in minutes.items():
                add_to(hours, bucket_start(t, HOUR), r)
            minutes = {}
        if hours and (trim or any(t != bucket_start(ts, HOUR) for t in hours)):
            db.executemany(UPSERT, [(HOUR, t, *r) for t, r in hours.items()])
            rolled[HOUR] = rolled[MINUTE]
            hours = {}
        db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       [(f"rolled:{w}", str(rolled[w])) for w in TIERS
                        if rolled[w] != self.rolled[w]])
        cut = self._trim(db, ts) if trim else {}

        def done(reading: Reading) -> None:
            if minutes is not self.minutes:
                self.open, self.open_t = None, -math.inf
            self.minutes, self.hours, self.rolled = minutes, hours, rolled
            self.since.update(cut)
            self.add(reading)
        return done

    def _trim(self, db: sqlite3.Connection, now: float) -> dict[int, float]:
        cut = {}
        for w in TIERS:
            cutoff = bucket_start(now - self.keep[w], w)
            if db.execute("DELETE FROM rollups WHERE tier = ? AND t < ?", (w, cutoff)).rowcount:
                cut[w] = max(self.since[w], float(cutoff))
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           (f"since:{w}", repr(cut[w])))
        return cut

    def flush(self, db: sqlite3.Connection, last_seq: int) -> None:
        """Every bucket held in memory into its row (at a clean stop; in its own transaction)."""
        if not self.minutes and not self.hours:
            return
        hours = {t: list(r) for t, r in self.hours.items()}
        for t, r in self.minutes.items():
            add_to(hours, bucket_start(t, HOUR), r)
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(UPSERT, [(MINUTE, t, *r) for t, r in self.minutes.items()])
            db.executemany(UPSERT, [(HOUR, t, *r) for t, r in hours.items()])
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           [(f"rolled:{w}", str(last_seq)) for w in TIERS])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.minutes, self.hours, self.open, self.open_t = {}, {}, None, -math.inf
        self.rolled = {w: last_seq for w in TIERS}

    def reader(self, db: sqlite3.Connection) -> SqliteReader:
        return SqliteReader(db, self)

    def held(self, tier: int) -> list[tuple[int, list]]:
        """The buckets of `tier` held in memory: (start, rollup), a start maybe twice."""
        if tier == MINUTE:
            return list(self.minutes.items())
        return list(self.hours.items()) + list(self.minutes.items())  # minutes fall in hours


def add_to(buckets: dict[int, list], t: int, rollup: list) -> None:
    """Another rollup into the bucket at t (its own list is not kept)."""
    mine = buckets.get(t)
    if mine is None:
        buckets[t] = list(rollup)
    else:
        merge(mine, rollup)


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
        for t, r in self.tiers.held(w):
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
        rows += [(t // step, *r[:4]) for t, r in self.tiers.held(tier) if a <= t < b]
        return rows

    def raw(self, step: float, first: int, last: int, lo: int, hi: int) -> Iterable[tuple]:
        guess, k = raw_bucket_sql(step)
        return self.db.execute(
            f"SELECT {k} AS k, COUNT(*), MIN(value), MAX(value), TOTAL(value) FROM ("
            f"SELECT value, ts, {guess} AS g FROM readings "
            "WHERE seq BETWEEN ? AND ? AND ts >= ? AND ts < ?) GROUP BY k",
            (lo, hi, edge(first, step), edge(last, step))).fetchall()
