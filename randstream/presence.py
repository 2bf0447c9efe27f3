"""Presence: how many watch the stream, here and in every process, and the `viewers` event.

A viewer is a Socket.IO client that joined the namespace (Live.clients: a polling session
that upgrades is one) or an open GET /api/stream (Feed.clients): each connection once, and
only once it was let in, so a connection refused before it joins is never counted.

One task per process (Presence.run), every period (the interval, at least MIN_PERIOD):
it reports this process's count to the tally and learns the total (one process: its own
count, presence.Alone; scaled out: every process's through Redis, one round trip,
redis_presence.py), then broadcasts `viewers` if the total changed since the last
broadcast. So a quiet stream costs one comparison a period, and a herd of joins one
broadcast a period, whatever its size. A client that joins gets the count at once, after
its `history`: the last known total plus what changed here since (itself included).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import NamedTuple, Protocol

log = logging.getLogger(__name__)

# Seconds between reports, whatever the --interval: a count people read needs no more, and
# scaled out each report is a round trip to Redis per process.
MIN_PERIOD = 1.0
# A process not heard from for this long (or 3 periods, if longer) is no longer counted:
# long enough that a process paused by a full collection or a herd of reconnects (a second
# or two) is not dropped and counted again, short enough that a dead one's viewers go soon.
MIN_DROP = 10.0
GREETINGS_KEPT = 64  # `viewers` packets kept encoded, by count


def period_for(interval: float) -> float:
    """Seconds between reports and broadcasts: at most once per --interval (the contract)."""
    return max(interval, MIN_PERIOD)


def drop_after(period: float) -> float:
    """Seconds after which a silent process is no longer counted."""
    return max(3 * period, MIN_DROP)


class Tally(Protocol):
    """Where processes report their viewers (topology.py picks one)."""

    def report(self, here: int) -> tuple[int, int] | None:
        """Report `here`; the total and the processes counted, or None if unknown now."""

    def leave(self) -> None:
        """This process stops: count it no more."""


class Alone:
    """One process: the total is this process's own count."""

    def report(self, here: int) -> tuple[int, int]:
        return here, 1

    def leave(self) -> None:
        pass


class Known(NamedTuple):
    total: int  # viewers in every process, as the tally last said
    processes: int
    here: int  # this process's viewers when it said so


class Presence:
    """The viewer count: reported and broadcast each period, sent to each client that joins."""

    def __init__(self, socketio, transport, tally: Tally, *, here: Callable[[], int],
                 period: float) -> None:
        self.socketio = socketio
        self.transport = transport
        self.tally = tally
        self.here = here  # this process's viewers now
        self.period = period
        self.known = Known(0, 1, 0)  # replaced whole: a joining client reads it in one go
        self.sent = 0  # the count last broadcast
        self.broadcasts = 0
        self.stopped = False
        self._greetings: dict[int, object] = {}
        # A report and the stop, one at a time: a report under way when the process stops
        # must not count it again after it left.
        self._reporting = threading.Lock()

    def count(self) -> int:
        """Viewers of the stream: the last known total plus what changed here since."""
        known = self.known
        return max(0, known.total + self.here() - known.here)

    @property
    def processes(self) -> int:
        return self.known.processes

    def greeting(self):
        """The `viewers` event for a client that just joined, encoded once per count (an
        encoding is ~10 us, a cached packet under 1: clients that join and leave around
        one count share it; in a herd each join is a new count, a small part of a join's
        cost, docs/performance.md)."""
        count = self.count()
        packet = self._greetings.get(count)
        if packet is None:
            if len(self._greetings) >= GREETINGS_KEPT:
                self._greetings.clear()
            packet = self._greetings[count] = self.transport.prepare_event(
                self.socketio, "viewers", {"count": count})
        return packet

    def run(self) -> None:
        """The background task: report, maybe broadcast, sleep a period; until stop()."""
        failing = False
        while not self.stopped:
            try:
                self.beat()
                failing = False
            except Exception:  # the count must outlive a bad report; one trace per spell
                if not failing:
                    log.exception("presence report failed; it goes on (repeats not logged)")
                failing = True
            self.socketio.sleep(self.period)

    def beat(self) -> None:
        """One period's work: report this process's count, broadcast the total if it changed."""
        with self._reporting:
            if self.stopped:
                return
            here = self.here()
            learnt = self.tally.report(here)
            if learnt is not None:
                self.known = Known(learnt[0], learnt[1], here)
        count = self.count()
        if count != self.sent:
            self.sent = count
            self.broadcasts += 1
            self.socketio.emit("viewers", {"count": count})

    def stop(self) -> None:
        """No more reports; the tally forgets this process now, not after the drop time."""
        with self._reporting:
            self.stopped = True
        self.tally.leave()
