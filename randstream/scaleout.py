"""Scale-out: several processes share one stream through Redis (--message-queue).

Every process serves pages and sockets and runs a SharedTicker. Each interval it claims
the lease (lease.py): the holder draws and stores the reading in Redis behind the lease's
fence (redis_store.py), which publishes it on the channel of readings in the same step;
then it hands the reading to its own fan-out (fanout.py), so its clients wait for no
round trip. Every process hears the channel (subscription.py) and hands each reading to
its fan-out: once, in seq order. Its history and stats (Follower) are fed from the same
readings and caught up from Redis each interval, so `history`, `resume`, the API and
/healthz are right on every process. When the leader dies its lease expires and the
next claim takes over, at seq + 1.

A pull source (module:callable) is called by the lease holder alone, once per tick and
off the event loop, as by the local Ticker: never two calls at once, a tick that finds
the call still running is skipped. Its value is stored behind the same fence and
published; a value whose call began under a lease this process no longer holds is
dropped. Push sources are refused by the configuration (config.check_source).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import redis

from .config import ConfigError, Settings
from .history import History, Reading, StoreError
from .lease import lease_ttl
from .redis_store import Fenced, RedisStore, location, open_redis_store
from .sources import source_kind
from .stats import ObservedStats, Stats
from .ticker import Ticker

log = logging.getLogger(__name__)


class RedisLink:
    """This process's view of Redis: which parts are in trouble. Logs each loss and return once."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.troubles: dict[str, str] = {}

    def trouble(self, part: str, exc: BaseException) -> None:
        if not self.troubles:
            log.warning("redis lost (%s): %s", self.where, exc)
        self.troubles[part] = str(exc) or type(exc).__name__

    def fine(self, *parts: str) -> None:
        cleared = [self.troubles.pop(part, None) is not None for part in parts]
        if any(cleared) and not self.troubles:
            log.info("redis back (%s)", self.where)

    @property
    def problem(self) -> str | None:
        if not self.troubles:
            return None
        return f"redis {self.where} unreachable (" + "; ".join(
            f"{part}: {msg}" for part, msg in sorted(self.troubles.items())) + ")"


def replace_stats(target: Stats | ObservedStats, state: dict) -> None:
    """Make `target` (shared by the ticker, the API and metrics) equal to `state`, in place."""
    vars(target).update(vars(type(target).from_state(state)))


def stats_kind(state: dict) -> str:
    """The source kind stored stats are of; stats from before sources are of random."""
    return state.get("kind", "random")


def _shown(kind: str) -> str:
    return "module:callable" if kind == "pull" else kind


class Follower:
    """This process's copy of the cluster's history and stats, in step with Redis.

    The fan-out's keeper when scaled out: a reading heard on the channel is followed if it
    is the next one (a gap is left to catch_up, which reads it from Redis); the lease
    holder's own reading is kept by kept(), after the fenced write. Readings are stored in
    Redis by then: here they only go into the ring (History.follow) and the stats.
    """

    def __init__(self, history: History, stats: Stats | ObservedStats, store: RedisStore,
                 lo: int, hi: int, ring_size: int = 900) -> None:
        self.history = history
        self.stats = stats
        self.store = store
        self.ring_size = ring_size  # what a catch-up reads at most (--history)
        self.lo, self.hi = lo, hi
        self.last_at: float | None = None  # wall clock of the last reading kept
        self.lock = threading.Lock()  # the subscription, the ticker and a pull call keep
        self.stats_seq, state = store.head()  # the seq the stats include, up to
        if state is not None and self.fits(state):
            replace_stats(self.stats, state)

    def fits(self, state: dict) -> bool:
        """Stored stats of this stream's kind (and, for random, its range)."""
        if isinstance(self.stats, ObservedStats):
            return stats_kind(state) == self.stats.kind
        return stats_kind(state) == "random" and (state.get("lo"), state.get("hi")) == (
            self.lo, self.hi)

    def counts(self, value: int | float) -> bool:
        """Whether `value` can go into this stream's stats (random: an int in its range)."""
        if isinstance(self.stats, ObservedStats):
            return True
        return isinstance(value, int) and self.lo <= value <= self.hi

    def __call__(self, reading: Reading) -> None:
        """Keep a reading of the stream's leader (this process's own included) if it is next.

        After a gap (missed on the channel: a worker that subscribed a moment late, a
        takeover) what Redis holds up to it is read first: the reading is handed out next,
        and a client that then asks for the gap (`resume`) must find it here."""
        if reading.seq > self.history.last_seq + 1:
            try:
                self.caught_up(*self.store.catch_up(self.history.last_seq, self.ring_size))
            except StoreError:
                pass  # Redis away: the ticker's catch-up fills it in later
        with self.lock:
            if reading.seq != self.history.last_seq + 1:
                return  # kept already, or after a gap Redis could not fill yet
            self.history.follow([reading])
            if self.stats_seq == reading.seq - 1 and self.counts(reading.value):
                self.stats.add(reading.value, reading.seq)
                self.stats_seq = reading.seq
        self.last_at = time.time()

    def kept(self, reading: Reading, stats_state: dict) -> None:
        """This process stored `reading` and these stats behind the fence: keep them too."""
        with self.lock:
            # A pull's append can race the ticker's catch_up, which may have fetched it.
            if reading.seq > self.history.last_seq:
                self.history.follow([reading])
            if reading.seq > self.stats_seq:
                replace_stats(self.stats, stats_state)
                self.stats_seq = reading.seq
        self.last_at = reading.ts

    def caught_up(self, readings: list[Reading], stats_seq: int, state: dict | None
                  ) -> list[Reading]:
        """Keep what Redis had beyond our last seq (a gap allowed: the rest is gone); the
        readings that were new here."""
        with self.lock:
            fresh = [r for r in readings if r.seq > self.history.last_seq]
            if fresh:
                self.history.follow(fresh)
                self.last_at = time.time()
            if (state is not None and stats_seq == self.history.last_seq
                    and stats_seq > self.stats_seq and self.fits(state)):
                replace_stats(self.stats, state)
                self.stats_seq = stats_seq
        return fresh


class SharedTicker(Ticker):
    """Runs in every process; only the lease holder draws, the others follow Redis."""

    def __init__(self, follower: Follower, publish: Callable[[Reading], object], *,
                 settings: Settings, sleep: Callable[[float], None], store: RedisStore,
                 link: RedisLink, source=None,
                 spawn: Callable[[Callable[[], None]], object] | None = None,
                 off_loop: Callable[[Callable], object] = lambda fn: fn()) -> None:
        s = settings
        self.follower = follower  # before Ticker's __init__, which sets last_tick_at
        super().__init__(
            follower.history, publish, interval=s.interval,
            lo=s.min, hi=s.max, seed=s.seed, sleep=sleep,
            source=source, spawn=spawn, off_loop=off_loop,
        )
        self.stats = follower.stats
        self.store = store
        self.lease = store.lease
        self.link = link
        self.seed = s.seed
        self.ring_size = s.history
        self.leading: bool | None = None  # None until the first claim answers
        self.takeovers = 0
        self.top = 0  # the highest seq Redis had handed out at the last claim
        self.dropped = 0  # pulled values dropped: the lease changed hands during the call
        # A claim and the stop, one at a time: a tick already past its look at `running`
        # (another thread, under threading) must not take back the lease stop() released.
        self._claiming = threading.Lock()
        self.stopped = False

    @property
    def last_tick_at(self) -> float | None:
        """When this process last learned of a reading, drawn or followed (for /healthz)."""
        return self.follower.last_at

    @last_tick_at.setter
    def last_tick_at(self, at: float | None) -> None:
        self.follower.last_at = at

    def stop(self) -> None:
        with self._claiming:  # a claim under way ends first; none starts after
            self.stopped = True
            self.leading = False  # from now on, whatever the release below answers
            super().stop()
        try:
            if self.lease.release():
                log.info("lease released at seq %d", self.history.last_seq)
        except redis.RedisError:
            pass  # it expires by itself

    def tick(self) -> Reading | None:
        reading = None
        fresh: list[Reading] = []
        try:
            with self._claiming:
                if self.stopped:
                    return None
                claim = self.lease.claim(self.history.last_seq)
            fresh = self.catch_up(claim.top)
            self._role(claim.leading)
            self.top = claim.top
            if claim.leading and self.source.mode == "pull":
                self.start_pull()  # its own task: this one goes on renewing the lease
            elif claim.leading:
                reading = self.draw(claim.top)
            self.link.fine("store")
        except Fenced as exc:
            self.link.fine("store")
            self._role(False, str(exc))
        except (StoreError, redis.RedisError, OSError) as exc:
            self.history.store_errors += 1
            self.link.trouble("store", exc)
        self.history.store_error = self.link.problem
        # Of what catch_up found (missed on the channel) the newest is handed out: SSE reads
        # the rest from the history, Socket.IO clients resume the gap (one shared answer)
        # instead of each getting every missed reading at once. Then our own reading.
        for each in fresh[-1:] if reading is None else [*fresh[-1:], reading]:
            self.publish(each)  # unless the channel was first: in seq order either way
        return reading

    def _pull(self) -> None:
        """The lease holder's call, in its own task (Ticker.start_pull): store, then publish."""
        term = self.takeovers  # which lease the call is made under
        try:
            value = self.source.pull(self.off_loop)
            if value is None or not self.running:
                return
            if not self.leading or self.takeovers != term:
                # The lease changed hands while the callable ran: the value belongs to no
                # tick of the stream's current leader (the fence would refuse most such).
                self.dropped += 1
                log.info("a pulled value was dropped: the lease changed hands during the call")
                return
            try:
                reading = self.keep(self.top, value)
            except Fenced as exc:
                self._role(False, str(exc))
                return
            except (StoreError, redis.RedisError, OSError) as exc:
                self.history.store_errors += 1
                self.link.trouble("store", exc)
                self.history.store_error = self.link.problem
                return
            self.publish(reading)
        except Exception:
            self.failures += 1
            log.exception("recording a pulled value failed; the ticker goes on")
        finally:
            self._pulling = False

    def _role(self, leading: bool, why: str | None = None) -> None:
        if leading == self.leading:
            return
        if leading:
            top = self.history.last_seq
            if self.source.mode == "tick":
                self.rng = random.Random(None if self.seed is None else f"{self.seed}:{top}")
            self.takeovers += 1
            log.info("leading: this process holds the lease and ticks after seq %d", top)
        elif self.leading is None:
            log.info("following: another process holds the lease")
        else:
            log.warning("following: lease lost at seq %d (%s)", self.history.last_seq,
                        why or "another process holds it")
        self.leading = leading

    def catch_up(self, top: int) -> list[Reading]:
        """Fetch what Redis has beyond our last seq (missed messages, a takeover): kept,
        and returned for handing out."""
        if top <= self.history.last_seq:
            return []
        readings, stats_seq, state = self.store.catch_up(self.history.last_seq, self.ring_size)
        return self.follower.caught_up(readings, stats_seq, state)

    def draw(self, top: int) -> Reading:
        """Draw from the random source; keep() stores it."""
        return self.keep(top, self.rng.randint(self.lo, self.hi))

    def keep(self, top: int, value: int | float) -> Reading:
        """Store behind the fence (which publishes it), then (only then) keep the reading."""
        seq = max(top, self.history.last_seq) + 1
        reading = Reading(seq, value, self.wall_clock())
        stats = type(self.stats).from_state(self.stats.state())
        stats.add(reading.value, seq)
        self.store.append(reading, stats.state())
        self.follower.kept(reading, stats.state())
        self.ticks += 1
        return reading


def open_store(settings: Settings) -> RedisStore:
    """The shared store; --db makes no sense here and is refused rather than ignored."""
    if settings.db is not None:
        raise ConfigError(
            "--db does not go with --message-queue: when scaled out, history and "
            "statistics live in Redis (unset --db / RANDOM_STREAM_DB)"
        )
    ttl = lease_ttl(settings.interval)
    store = open_redis_store(settings.message_queue, settings.retention, ttl,
                             keep=settings.tier_keep())
    state = store.stats_state()
    kind = source_kind(settings.source)
    if state is not None and stats_kind(state) != kind:
        store.close()
        raise ConfigError(
            f"the stream in Redis {store.where} comes from --source {_shown(stats_kind(state))}, "
            f"not {_shown(kind)}: pass a matching --source or another Redis database"
        )
    if kind == "random" and state is not None and (state["lo"], state["hi"]) != (
            settings.min, settings.max):
        store.close()
        raise ConfigError(
            f"the stream in Redis {store.where} draws from [{state['lo']}, {state['hi']}], not "
            f"[{settings.min}, {settings.max}]: pass matching --min/--max or another Redis database"
        )
    return store


def link_for(settings: Settings) -> RedisLink:
    """The RedisLink a scaled-out process reports its Redis troubles through."""
    return RedisLink(location(settings.message_queue))
