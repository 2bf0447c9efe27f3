"""The ticker: one background task that draws a number on a fixed schedule.

It takes a source (sources.py): a tick source is drawn from in the ticker's task, a pull
source is called off the event loop once per tick, a push source records readings as
they arrive. Every value becomes a reading the same way, in record(), and goes to the
fan-out (fanout.py), which stores it before anyone sees it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from .history import History, Reading
from .sources import RandomSource

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
    """Draws a reading every `interval` seconds and publishes it (Fanout.publish)."""

    def __init__(
        self,
        history: History,
        publish: Callable[[Reading], object],
        *,
        interval: float,
        lo: int = 0,
        hi: int = 100,
        seed: int | None = None,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        source=None,
        spawn: Callable[[Callable[[], None]], object] | None = None,
        off_loop: Callable[[Callable], object] = lambda fn: fn(),
    ) -> None:
        self.history = history  # where the next seq comes from
        self.publish = publish
        self.interval = interval
        self.lo, self.hi = lo, hi
        self.source = source if source is not None else RandomSource(lo, hi, seed)
        if isinstance(self.source, RandomSource):
            self.source.reseed(history.last_seq)
        self.spawn = spawn  # starts a pull call's task (socketio.start_background_task)
        self.off_loop = off_loop  # runs a blocking call in an OS thread
        self._record_lock = threading.Lock()  # push sources record from several requests
        self._pulling = False
        self.last_wake_at: float | None = None  # wall clock of the last scheduled wake-up
        self.sleep = sleep
        self.clock = clock
        self.wall_clock = wall_clock
        self.running = False
        self.last_tick_at: float | None = None  # wall clock of the last reading
        self.tick_lag = 0.0  # how late the last tick woke, in seconds
        self.ticks = 0
        self.failures = 0

    @property
    def rng(self):
        return self.source.rng

    @rng.setter
    def rng(self, rng) -> None:  # the scale-out leader reseeds at a takeover
        self.source.rng = rng

    def tick(self) -> Reading | None:
        if self.source.mode == "pull":
            self.start_pull()
            return None
        return self.record(self.source.draw())

    def record(self, value: int | float) -> Reading:
        """Give `value` the next seq and the time now, and publish it (kept, then handed out)."""
        with self._record_lock:  # seq order is publish order
            reading = Reading(self.history.last_seq + 1, value, self.wall_clock())
            try:
                self.publish(reading)
            finally:
                # A tick counts once the reading is kept, whether or not every subscriber
                # took it (a keeper that raised kept nothing).
                if self.history.last_seq >= reading.seq:
                    self.last_tick_at = reading.ts
                    self.ticks += 1
        return reading

    def start_pull(self) -> None:
        """Call the pull source in its own task; a call still running means this tick is skipped."""
        if self._pulling:
            self.source.skip()
            return
        self._pulling = True
        if self.spawn is None:
            self._pull()
        else:
            self.spawn(self._pull)

    def _pull(self) -> None:
        try:
            value = self.source.pull(self.off_loop)
            if value is not None and self.running:
                self.record(value)
        except Exception:
            self.failures += 1
            log.exception("recording a pulled value failed; the ticker goes on")
        finally:
            self._pulling = False

    def run(self) -> None:
        """The background task; returns when stop() is called (or a push source ends)."""
        self.running = True
        if self.source.mode == "push":
            log.info("ticker started: readings %s", self.source.describe())
            feed = lambda: self.source.run(self.record, self.off_loop, lambda: self.running)  # noqa: E731
            feed() if self.spawn is None else self.spawn(feed)
            # Nothing else may be due on the event loop: without a timer, eventlet's hub
            # sleeps up to a minute and a SIGTERM waits that long to be acted on.
            while self.running:
                self.sleep(1.0)
            return
        start = self.clock()
        log.info("ticker started: every %gs, %s", self.interval, self.source.describe())
        while self.running:
            deadline = next_deadline(start, self.interval, self.clock())
            self.sleep(max(0.0, deadline - self.clock()))
            if not self.running:
                break
            self.tick_lag = max(0.0, self.clock() - deadline)
            self.last_wake_at = self.wall_clock()
            try:
                self.tick()
            except Exception:
                self.failures += 1
                log.exception("tick failed; the ticker goes on")
        log.info("ticker stopped at seq %d", self.history.last_seq)

    def stop(self) -> None:
        self.running = False
