"""Running statistics against the textbook formulas."""

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from randstream.stats import Stats, chi_square_p_value


@given(st.lists(st.integers(0, 100), min_size=1, max_size=500))
def test_running_stats_match_the_statistics_module(values):
    stats = Stats(0, 100)
    for seq, v in enumerate(values, 1):
        stats.add(v, seq)
    assert stats.count == len(values)
    assert stats.min == min(values) and stats.max == max(values)
    assert stats.mean == pytest.approx(statistics.fmean(values), abs=1e-9)
    assert stats.stddev == pytest.approx(statistics.pstdev(values), abs=1e-7)
    assert sum(stats.histogram) == len(values)
    assert stats.histogram[values[0]] == values.count(values[0])
    assert stats.since_seq == 1
    assert stats.through_seq == len(values)


def test_empty_stats_say_so():
    d = Stats(0, 100).to_dict()
    assert d["count"] == 0
    assert d["mean"] is d["stddev"] is d["p_value"] is d["min"] is None
    assert d["histogram"] == [0] * 101
    assert d["range"] == {"min": 0, "max": 100}


def test_values_outside_the_range_are_refused():
    stats = Stats(0, 10)
    with pytest.raises(ValueError):
        stats.add(11)
    assert stats.count == 0


@pytest.mark.parametrize(
    "statistic, dof, p",
    [(3.841459, 1, 0.05), (124.342, 100, 0.05), (2.558, 10, 0.99), (18.307, 10, 0.05),
     (135.807, 100, 0.01), (0.0, 5, 1.0)],
)
def test_chi_square_p_values_match_tables(statistic, dof, p):
    assert chi_square_p_value(statistic, dof) == pytest.approx(p, abs=2e-4)


def test_uniform_histogram_passes_and_skewed_one_fails():
    uniform, skewed = Stats(0, 9), Stats(0, 9)
    for i in range(1000):
        uniform.add(i % 10)
        skewed.add(0 if i % 2 else i % 10)
    assert uniform.chi_square()[1] > 0.99
    assert skewed.chi_square()[1] < 1e-6


def test_state_round_trips():
    stats = Stats(0, 100)
    for v in (3, 99, 50, 50):
        stats.add(v)
    restored = Stats.from_state(stats.state())
    assert restored.to_dict() == stats.to_dict()
    restored.add(7)
    assert restored.count == 5
