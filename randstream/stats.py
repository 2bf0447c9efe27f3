"""Running statistics of the stream, updated one value at a time."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Count, min, max, mean, standard deviation and histogram over [lo, hi].

    Mean and variance use Welford's update, so nothing is recomputed from history
    and no precision is lost on long streams.
    """

    lo: int
    hi: int
    count: int = 0
    min: int | None = None
    max: int | None = None
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean
    histogram: list[int] = field(default_factory=list)
    since_seq: int | None = None
    through_seq: int | None = None

    def __post_init__(self) -> None:
        if not self.histogram:
            self.histogram = [0] * (self.hi - self.lo + 1)
        if len(self.histogram) != self.hi - self.lo + 1:
            raise ValueError("histogram does not match the range")

    def add(self, value: int, seq: int | None = None) -> None:
        if not self.lo <= value <= self.hi:
            raise ValueError(f"value {value} is outside [{self.lo}, {self.hi}]")
        if self.since_seq is None:
            self.since_seq = seq
        self.through_seq = seq
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)
        self.histogram[value - self.lo] += 1

    @property
    def stddev(self) -> float | None:
        """Population standard deviation (the stream is the population)."""
        return math.sqrt(self.m2 / self.count) if self.count else None

    def chi_square(self) -> tuple[float, float] | None:
        """Pearson's statistic against the uniform distribution, and its p-value."""
        bins = len(self.histogram)
        if self.count == 0 or bins < 2:
            return None
        expected = self.count / bins
        statistic = sum((observed - expected) ** 2 for observed in self.histogram) / expected
        return statistic, chi_square_p_value(statistic, bins - 1)

    def to_dict(self) -> dict:
        """The /api/stats JSON."""
        test = self.chi_square()
        return {
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "mean": self.mean if self.count else None,
            "stddev": self.stddev,
            "histogram": list(self.histogram),
            "chi_square": test[0] if test else None,
            "p_value": test[1] if test else None,
            "range": {"min": self.lo, "max": self.hi},
            "since_seq": self.since_seq,
            "through_seq": self.through_seq,
            "kind": "uniform",  # integers over a declared range: the chi-square applies
            "uniformity": {"chi_square": test[0], "p_value": test[1]} if test else None,
        }

    def state(self) -> dict:
        """Everything needed to restore these stats after a restart."""
        return {
            "lo": self.lo, "hi": self.hi, "count": self.count, "min": self.min,
            "max": self.max, "mean": self.mean, "m2": self.m2,
            "histogram": list(self.histogram), "since_seq": self.since_seq,
            "through_seq": self.through_seq,
        }

    @classmethod
    def from_state(cls, state: dict) -> Stats:
        return cls(**state)


HISTOGRAM_BINS = 20


@dataclass
class ObservedStats:
    """Count, min, max, mean and standard deviation of any numbers; no uniformity test.

    A source without a declared integer range has no expected distribution to test
    against; its histogram is of the recent readings, in bins over what they span.
    """

    kind: str  # the source kind, remembered by the store
    count: int = 0
    min: float | None = None
    max: float | None = None
    mean: float = 0.0
    m2: float = 0.0
    since_seq: int | None = None
    through_seq: int | None = None

    def add(self, value: float, seq: int | None = None) -> None:
        if self.since_seq is None:
            self.since_seq = seq
        self.through_seq = seq
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)

    @property
    def stddev(self) -> float | None:
        return math.sqrt(max(0.0, self.m2) / self.count) if self.count else None

    def to_dict(self, recent: list | None = None) -> dict:
        """The /api/stats JSON; `recent` are the readings the histogram is of."""
        values = [r.value for r in recent or []]
        return {
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "mean": self.mean if self.count else None,
            "stddev": self.stddev,
            "histogram": binned(values),
            "chi_square": None,
            "p_value": None,
            "range": None,
            "since_seq": self.since_seq,
            "through_seq": self.through_seq,
            "kind": "observed",
            "uniformity": None,
            "source": self.kind,
        }

    def state(self) -> dict:
        return {
            "kind": self.kind, "count": self.count, "min": self.min, "max": self.max,
            "mean": self.mean, "m2": self.m2, "since_seq": self.since_seq,
            "through_seq": self.through_seq,
        }

    @classmethod
    def from_state(cls, state: dict) -> ObservedStats:
        return cls(**state)


def binned(values: list, bins: int = HISTOGRAM_BINS) -> dict:
    """{"edges": [...], "counts": [...], "readings": n}: equal bins over the values' span.

    Integers spanning fewer than `bins` values get one bin per integer.
    """
    if not values:
        return {"edges": [], "counts": [], "readings": 0}
    lo, hi = min(values), max(values)
    if all(isinstance(v, int) for v in values) and hi - lo < bins:
        edges = [lo + i - 0.5 for i in range(hi - lo + 2)]
    elif hi == lo:
        edges = [lo - 0.5, hi + 0.5]
    else:
        width = (hi - lo) / bins
        edges = [lo + i * width for i in range(bins)] + [hi]
    counts = [0] * (len(edges) - 1)
    span = edges[-1] - edges[0]
    if not 0 < span < math.inf:  # values too large for a half-unit margin: one bin
        return {"edges": [edges[0], edges[-1]], "counts": [len(values)], "readings": len(values)}
    for v in values:
        i = int((v - edges[0]) / span * len(counts))
        counts[min(max(i, 0), len(counts) - 1)] += 1
    return {"edges": edges, "counts": counts, "readings": len(values)}


def chi_square_p_value(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square(dof): the regularised upper gamma Q(dof/2, x/2)."""
    if statistic <= 0:
        return 1.0
    return _upper_regularized_gamma(dof / 2.0, statistic / 2.0)


def _upper_regularized_gamma(a: float, x: float) -> float:
    # Series for x < a + 1, continued fraction (modified Lentz) otherwise;
    # both converge quickly in their region (Numerical Recipes, 6.2).
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        n = a
        for _ in range(1000):
            n += 1.0
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefactor))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(log_prefactor) * h)
