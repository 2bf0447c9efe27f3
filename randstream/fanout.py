"""The one way a reading goes once this process has it: kept first, then handed out.

Declared once, in stream.py; every reading this process learns of enters by publish():

    the ticker (or, scaled out, the Redis channel and the catch-up read) -> Fanout.publish
        1. keep: the stats and the history (Keep here, for one process: the ring and
           SQLite; scaled out, scaleout.Follower: the ring, the reading being in Redis)
        2. then every subscriber, in the order declared: the SSE feed, the Socket.IO
           broadcast (timed for /metrics), the full garbage collection when one is due

A reading whose seq is not above the last one handed out is kept (if the keeper lacks
it) but not handed out again: the lease holder hands out its own reading and then hears
it from Redis, a message may come twice, and a late one must not reach a client after a
newer one. So every client of a process gets the readings in seq order, each once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from .history import History, Reading
from .stats import ObservedStats, Stats


class Fanout:
    """Hands each new reading to its keeper, then to every subscriber, once, in seq order."""

    def __init__(self, keep: Callable[[Reading], object],
                 subscribers: Sequence[Callable[[Reading], object]], last_seq: int = 0) -> None:
        self.keep = keep
        self.subscribers = tuple(subscribers)
        self.last_seq = last_seq  # the newest seq handed out (at start: the stored newest)
        self.repeats = 0  # readings not handed out: this seq or a newer one had been
        # The ticker and, scaled out, the subscription publish from their own tasks:
        # one at a time, so that no client gets seq n + 1 before n.
        self._lock = threading.Lock()

    def publish(self, reading: Reading) -> bool:
        """Keep `reading`, then hand it out unless it or a newer one has been; whether it was.

        A keeper or subscriber that raises ends this reading's walk (the caller logs it);
        the reading counts as handed out once the keeper has it.
        """
        with self._lock:
            self.keep(reading)
            if reading.seq <= self.last_seq:
                self.repeats += 1
                return False
            self.last_seq = reading.seq
            for subscriber in self.subscribers:
                subscriber(reading)
        return True


class Keep:
    """One process's keeper: the stats take the reading, then the history stores both."""

    def __init__(self, history: History, stats: Stats | ObservedStats) -> None:
        self.history = history
        self.stats = stats

    def __call__(self, reading: Reading) -> None:
        if reading.seq <= self.history.last_seq:
            return  # kept already
        self.stats.add(reading.value, reading.seq)
        self.history.append(reading, self.stats.state())
