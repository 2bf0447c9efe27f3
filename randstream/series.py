"""Range answers (GET /api/series): the step ladder, the choice of tier, the bucket arithmetic.

No I/O: a store hands in what it holds through a TierReader (store.py's and
redis_store.py's), and gets back the answer as the contract says it:

    {"from", "to", "step", "buckets": [{"t", "count", "min", "max", "mean"}, ...]}

Buckets are epoch-aligned: bucket k of a step holds the readings with
edge(k) <= ts < edge(k + 1), so every answer at one step cuts time at the same places (a
page can cache them, and a minute or hour rollup falls whole into one bucket). The
answer's from/to are edges, so its buckets' counts add up to exactly the readings with
from <= ts < to. Edges are computed one way everywhere (edge(), and the same expression
in SQL and Lua), and index() is exact (not just ts // step), so a reading on an edge is
in the bucket that starts there, whichever tier counts it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple, Protocol

RAW = 0  # the readings themselves
MINUTE, HOUR = 60, 3600
TIERS = (MINUTE, HOUR)  # rollup widths, seconds: each tier's buckets are its own steps

DAY = 86_400
# Sub-second steps are 1/n of a second (n whole), so their edges are k / n, as exact as a
# float can be; from a second up, steps are whole seconds and edges k * step, exact.
LADDER: tuple[float, ...] = (
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
    1, 2, 5, 10, 15, 20, 30,  # raw readings
    60, 120, 300, 600, 900, 1200, 1800,  # per-minute rollups
    3600, 7200, 10800, 21600, 43200,  # per-hour rollups, and days from here
    *(DAY * m * 10**e for e in range(6) for m in (1, 2, 5)),
)

# A raw answer reads at most this many readings (0.1-0.2 s from SQLite): a range that holds
# more is answered at a step the per-minute rollups serve, although a finer one was asked.
MAX_RAW_READINGS = 100_000

MAX_POINTS = 2000
DEFAULT_POINTS = 600
DEFAULT_SPAN = 3600.0  # `from` when not given: an hour before `to`
MAX_TS = 1e10  # epoch seconds (the year 2286): anything later is a 400


def inverse(step: float) -> int:
    """n for a sub-second step 1/n; 0 for steps of whole seconds."""
    return round(1 / step) if step < 1 else 0


def edge(k: int, step: float) -> float:
    """Where bucket k of `step` starts (and bucket k - 1 ends)."""
    n = inverse(step)
    return k / n if n else float(k * step)


def index(ts: float, step: float) -> int:
    """The bucket of `ts`: the k with edge(k) <= ts < edge(k + 1), exactly.

    ts / step rounded may land one off at an edge; the comparisons with edge() settle it.
    """
    n = inverse(step)
    k = math.floor(ts * n) if n else math.floor(ts / step)
    if edge(k, step) > ts:
        k -= 1
    elif edge(k + 1, step) <= ts:
        k += 1
    return k


def snap(frm: float, to: float, step: float) -> tuple[int, int]:
    """Buckets [first, last) covering [frm, to): frm snapped down, to up, to edges."""
    first = index(frm, step)
    last = index(to, step)
    if edge(last, step) < to:
        last += 1
    return first, last


def first_at_or_after(ts: float, step: float) -> int:
    k = index(ts, step)
    return k if edge(k, step) >= ts else k + 1


def tiers_for(step: float) -> tuple[int, ...]:
    """The tiers that can answer at `step`, coarsest (cheapest) first."""
    return tuple(w for w in reversed(TIERS) if step >= w and step % w == 0) + (RAW,)


class TierReader(Protocol):
    """What a store shows of its tiers, from one consistent view (one lock, one script)."""

    def since(self, tier: int) -> float:
        """A rollup tier holds every reading with ts >= this (-inf: all, nothing trimmed)."""
        ...

    def seq_span(self, frm: float, to: float) -> tuple[int, int] | None:
        """The lowest and highest seq of the readings with frm <= ts < to (from the
        per-minute rollups' seq ranges: maybe a little wider), None if there are none."""
        ...

    def oldest_seq(self) -> int | None:
        """The oldest raw reading's seq (raw readings go from there to the newest)."""
        ...

    def rollups(self, tier: int, step: float, first: int, last: int) -> Iterable[tuple]:
        """(k, count, min, max, sum) per bucket k of `step` in [first, last), from the tier's
        rows; a k may come more than once (rows and buckets not yet written): they add up."""
        ...

    def raw(self, step: float, first: int, last: int, lo: int, hi: int) -> Iterable[tuple]:
        """(k, count, min, max, sum) per bucket, from the readings lo <= seq <= hi whose ts is
        in [edge(first), edge(last))."""
        ...


class Plan(NamedTuple):
    step: float
    tier: int
    first: int
    last: int
    seqs: tuple[int, int] | None = None  # a raw plan's readings

    @property
    def frm(self) -> float:
        return edge(self.first, self.step)

    @property
    def to(self) -> float:
        return edge(self.last, self.step)


def plan(reader: TierReader, frm: float, to: float, points: int, interval: float) -> Plan:
    """The finest ladder step with at most `points` buckets over [frm, to) that a tier holds
    whole; if no tier reaches back to `frm`, the one that reaches furthest, `from` moved up."""
    fitting = []
    for step in LADDER:
        if step < interval:
            continue
        first, last = snap(frm, to, step)
        if last - first > points:
            continue
        fitting.append((step, first, last))
        for tier in tiers_for(step):
            if tier != RAW:
                if reader.since(tier) <= edge(first, step):
                    return Plan(step, tier, first, last)
                continue
            seqs = raw_seqs(reader, edge(first, step), edge(last, step))
            if seqs is not None:
                return Plan(step, RAW, first, last, seqs)
    # Older than every tier keeps: the tier that reaches furthest back, from where it does.
    since, step, tier, first, last = min(
        (reader.since(tier), step, tier, first, last)
        for step, first, last in fitting for tier in tiers_for(step) if tier != RAW
    )
    return Plan(step, tier, min(max(first, first_at_or_after(since, step)), last), last)


def raw_seqs(reader: TierReader, frm: float, to: float) -> tuple[int, int] | None:
    """The seqs a raw answer over [frm, to) reads, if the raw readings can give it."""
    if reader.since(MINUTE) > frm:
        return None  # the per-minute seq ranges that find the readings are gone
    span = reader.seq_span(frm, to)
    if span is None:
        return (1, 0)  # no reading there: an empty answer, exact
    lo, hi = span
    oldest = reader.oldest_seq()
    if oldest is None or oldest > lo or hi - lo + 1 > MAX_RAW_READINGS:
        return None  # trimmed past --retention, or too many to read
    return span


def answer(reader: TierReader, frm: float, to: float, points: int, interval: float) -> dict:
    """The /api/series answer over [frm, to) in at most `points` buckets."""
    p = plan(reader, frm, to, points, interval)
    if p.first == p.last:
        rows: Iterable[tuple] = ()
    elif p.tier == RAW:
        rows = reader.raw(p.step, p.first, p.last, *p.seqs) if p.seqs[0] <= p.seqs[1] else ()
    else:
        rows = reader.rollups(p.tier, p.step, p.first, p.last)
    return {"from": p.frm, "to": p.to, "step": float(p.step), "buckets": buckets(rows, p)}


def buckets(rows: Iterable[tuple], p: Plan) -> list[dict]:
    merged: dict[int, list] = {}
    for k, count, lo, hi, total in rows:
        if not p.first <= k < p.last or not count:
            continue
        b = merged.get(k)
        if b is None:
            merged[k] = [count, lo, hi, total]
        else:
            b[0] += count
            b[1] = lo if lo < b[1] else b[1]
            b[2] = hi if hi > b[2] else b[2]
            b[3] += total
    return [{"t": edge(k, p.step), "count": c, "min": lo, "max": hi, "mean": mean(total, c, lo, hi)}
            for k, (c, lo, hi, total) in sorted(merged.items())]


def mean(total: float, count: int, lo: float, hi: float) -> float:
    """total / count, kept within [min, max]: a float sum can round past them, or overflow."""
    m = total / count
    if m != m:  # NaN: +inf and -inf summed
        return float(lo + hi) / 2
    return float(min(max(m, lo), hi))


# --- rollups: (count, min, max, sum, lowest seq, highest seq) -------------------------------


def bucket_start(ts: float, width: int) -> int:
    """The start of the tier bucket of `ts` (a whole number of seconds)."""
    return index(ts, width) * width


def new_rollup(value: float, seq: int) -> list:
    return [1, value, value, float(value), seq, seq]


def fold(rollup: list, value: float, seq: int) -> None:
    """One more reading into a rollup (seqs come in increasing order)."""
    rollup[0] += 1
    if value < rollup[1]:
        rollup[1] = value
    elif value > rollup[2]:
        rollup[2] = value
    rollup[3] += value
    rollup[5] = seq


def merge(rollup: list, other: list) -> None:
    """Another rollup of the same bucket into `rollup`."""
    rollup[0] += other[0]
    rollup[1] = other[1] if other[1] < rollup[1] else rollup[1]
    rollup[2] = other[2] if other[2] > rollup[2] else rollup[2]
    rollup[3] += other[3]
    rollup[4] = min(rollup[4], other[4])
    rollup[5] = max(rollup[5], other[5])
