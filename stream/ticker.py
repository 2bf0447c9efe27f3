"""The ticker: one background task that draws a number on a fixed schedule."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

from .history import History, Reading
from .stats import Stats

log = logging.getLogger(__name__)


def next_deadline(start: float, interval: float, now: float) -> float:
    """The first slot start + k*interval (k >= 1) that is after `now`.

    Deadlines come from the start time, never from the previous wake-up, so the
    time spent drawing and broadcasting does not accumulate into drift. Slots that
    were missed entirely (a stalled process) are skipped, not fired in a burst.
    """
    k = max(1, math.floor((now - start) / interval) + 1)
    return start + k * interval


class Ticker:
    """Draws, stores, then broadcasts a reading every `interval` seconds."""

    def __init__(
        self,
        history: History,
        stats: Stats,
        broadcast: Callable[[Reading], None],
        *,
        interval: float,
        lo: int,
        hi: int,
        seed: int | None,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.history = history
        self.stats = stats
        self.broadcast = broadcast
        self.interval = interval
        self.lo, self.hi = lo, hi
        # A seeded stream is reproducible per (seed, restart point): a restart reseeds
        # from the seq it continues at, instead of replaying the values already drawn.
        self.rng = random.Random(None if seed is None else f"{seed}:{history.last_seq}")
        self.sleep = sleep
        self.clock = clock
        self.wall_clock = wall_clock
        self.running = False
        self.last_tick_at: float | None = None  # wall clock of the last reading
        self.tick_lag = 0.0  # how late the last tick woke, in seconds
        self.ticks = 0
        self.failures = 0

    def tick(self) -> Reading:
        reading = Reading(self.history.last_seq + 1, self.rng.randint(self.lo, self.hi), self.wall_clock())
        self.stats.add(reading.value, reading.seq)
        self.history.append(reading, self.stats.state())
        self.last_tick_at = reading.ts
        self.ticks += 1
        self.broadcast(reading)
        return reading

    def run(self) -> None:
        """The background task; returns when stop() is called."""
        self.running = True
        start = self.clock()
        log.info("ticker started: every %gs, values in [%d, %d]", self.interval, self.lo, self.hi)
        while self.running:
            deadline = next_deadline(start, self.interval, self.clock())
            self.sleep(max(0.0, deadline - self.clock()))
            if not self.running:
                break
            self.tick_lag = max(0.0, self.clock() - deadline)
            try:
                self.tick()
            except Exception:
                self.failures += 1
                log.exception("tick failed; the ticker goes on")
        log.info("ticker stopped at seq %d", self.history.last_seq)

    def stop(self) -> None:
        self.running = False
