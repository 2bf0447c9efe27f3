"""The ticker's schedule: fixed slots t0 + k*interval, no drift, failures survived."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from randstream.fanout import Fanout, Keep
from randstream.history import History
from randstream.stats import Stats
from randstream.store import SqliteStore
from randstream.ticker import Ticker, next_deadline


def test_next_deadline_is_the_next_slot():
    assert next_deadline(100.0, 1.0, 100.0) == 101.0
    assert next_deadline(100.0, 1.0, 100.999) == 101.0
    assert next_deadline(100.0, 1.0, 101.0) == 102.0
    assert next_deadline(100.0, 0.5, 103.2) == 103.5


def test_missed_slots_are_skipped_not_burst():
    # Stalled for 10.3 intervals: the next wake-up is the next future slot.
    assert next_deadline(0.0, 1.0, 10.3) == 11.0


@given(
    start=st.floats(-1e6, 1e6, allow_nan=False),
    interval=st.floats(0.01, 3600),
    elapsed=st.floats(0, 1e5),
)
def test_deadline_is_on_the_grid_and_within_one_interval(start, interval, elapsed):
    now = start + elapsed
    deadline = next_deadline(start, interval, now)
    k = round((deadline - start) / interval)
    assert k >= 1
    assert deadline == pytest.approx(start + k * interval, rel=1e-9, abs=1e-6)
    assert now - 1e-6 * max(1.0, abs(now)) <= deadline <= now + interval * (1 + 1e-9) + 1e-6


class FakeClock:
    """Time that moves only when the ticker sleeps or does (simulated) work."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.now += seconds


def make_ticker(clock, broadcast, *, interval=1.0, seed=7, store=None, stats=None):
    """A Ticker publishing to a fan-out of the store (Keep) and then `broadcast`."""
    store = store or SqliteStore(":memory:", retention=1000)
    history = History(store, ring_size=100)
    fanout = Fanout(Keep(history, stats or Stats(0, 100)), [broadcast], history.last_seq)
    return Ticker(
        history, fanout.publish, interval=interval, lo=0, hi=100, seed=seed,
        sleep=clock.sleep, clock=clock, wall_clock=clock,
    )


def test_slow_broadcasts_do_not_accumulate_drift():
    clock = FakeClock()
    wakeups = []

    def slow_broadcast(reading):
        wakeups.append(clock.now)
        clock.now += 0.3  # each broadcast takes 30% of the interval
        if len(wakeups) == 50:
            ticker.stop()

    ticker = make_ticker(clock, slow_broadcast)
    ticker.run()
    start = wakeups[0] - 1.0
    # Every reading is drawn exactly on its slot: naive sleep(interval) would drift 0.3 s per tick.
    assert wakeups == pytest.approx([start + k for k in range(1, 51)])


def test_tick_stores_then_broadcasts_consecutive_seqs_in_range():
    clock = FakeClock()
    seen = []

    def broadcast(reading):
        assert ticker.history.store.latest(1)[0] == reading  # stored before it is broadcast
        seen.append(reading)
        if len(seen) == 20:
            ticker.stop()

    stats = Stats(0, 100)
    ticker = make_ticker(clock, broadcast, stats=stats)
    ticker.run()
    assert [r.seq for r in seen] == list(range(1, 21))
    assert all(0 <= r.value <= 100 for r in seen)
    assert stats.count == 20 and ticker.history.store.stats_state() == stats.state()


def test_a_failing_tick_is_logged_and_the_loop_goes_on(caplog):
    clock = FakeClock()
    calls = []

    def flaky_broadcast(reading):
        calls.append(reading.seq)
        if len(calls) == 2:
            raise RuntimeError("network hiccup")
        if len(calls) == 5:
            ticker.stop()

    ticker = make_ticker(clock, flaky_broadcast)
    ticker.run()
    assert calls == [1, 2, 3, 4, 5]
    assert ticker.failures == 1
    assert "tick failed" in caplog.text


def test_a_tick_counts_once_kept_even_if_a_subscriber_fails():
    clock = FakeClock()

    def failing_broadcast(reading):
        raise RuntimeError("network hiccup")

    ticker = make_ticker(clock, failing_broadcast)
    with pytest.raises(RuntimeError):
        ticker.tick()
    assert ticker.ticks == 1 and ticker.last_tick_at == clock.now  # stored: /healthz sees it

    class BrokenKeeper:
        def __call__(self, reading):
            raise OSError("disk gone")

    history = History(SqliteStore(":memory:", retention=10), ring_size=10)
    fanout = Fanout(BrokenKeeper(), [], history.last_seq)
    ticker = Ticker(history, fanout.publish, interval=1.0, sleep=clock.sleep, clock=clock,
                    wall_clock=clock)
    with pytest.raises(OSError):
        ticker.tick()
    assert ticker.ticks == 0 and ticker.last_tick_at is None  # nothing kept: no tick


def test_seeded_streams_are_reproducible():
    def values(seed):
        clock, seen = FakeClock(), []

        def broadcast(reading):
            seen.append(reading.value)
            if len(seen) == 30:
                ticker.stop()

        ticker = make_ticker(clock, broadcast, seed=seed)
        ticker.run()
        return seen

    assert values(42) == values(42)
    assert values(42) != values(43)


def test_seq_continues_after_a_restart(tmp_path):
    path = str(tmp_path / "stream.sqlite3")

    def run(n):
        clock, seen = FakeClock(), []

        def broadcast(reading):
            seen.append(reading.seq)
            if len(seen) == n:
                ticker.stop()

        store = SqliteStore(path, retention=1000)
        ticker = make_ticker(clock, broadcast, store=store)
        ticker.run()
        store.close()
        return seen

    assert run(5) == [1, 2, 3, 4, 5]
    assert run(3) == [6, 7, 8]
