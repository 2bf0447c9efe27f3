"""Scale-out: several processes share one stream through Redis (--message-queue).

Every process serves pages and sockets and runs a SharedTicker. Each interval it claims
the lease (lease.py): the holder draws, stores the reading in Redis behind the lease's
fence (redis_store.py), then emits it; the emit goes through Flask-SocketIO's Redis
message queue, so every process delivers it once to its own clients. The others follow:
their ring and stats are fed from those same messages and caught up from Redis each
interval, so `history`, `resume`, the API and /healthz are right on every process.
When the leader dies its lease expires and the next claim takes over, at seq + 1.
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
from .stats import Stats
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


def replace_stats(target: Stats, state: dict) -> None:
    """Make `target` (shared by the ticker, the API and metrics) equal to `state`, in place."""
    vars(target).update(vars(Stats.from_state(state)))


class SharedTicker(Ticker):
    """Runs in every process; only the lease holder draws, the others follow Redis."""

    def __init__(self, history: History, stats: Stats, broadcast: Callable[[Reading], None], *,
                 settings: Settings, sleep: Callable[[float], None], store: RedisStore,
                 link: RedisLink, start_queue: Callable[[], None] | None = None) -> None:
        s = settings
        super().__init__(
            history, stats, broadcast, interval=s.interval,
            lo=s.min, hi=s.max, seed=s.seed, sleep=sleep,
        )
        self.store = store
        self.lease = store.lease
        self.lease_seconds = store.lease.ttl_ms / 1000
        self.link = link
        self.seed = s.seed
        self.ring_size = s.history
        self.start_queue = start_queue
        self.leading: bool | None = None  # None until the first claim answers
        self.takeovers = 0
        self._lock = threading.Lock()  # followers are fed from the queue task too
        self.stats_seq, state = store.head()  # the seq the stats include, up to
        if state is not None and self._same_range(state):
            replace_stats(self.stats, state)

    def _same_range(self, state: dict) -> bool:
        return (state.get("lo"), state.get("hi")) == (self.lo, self.hi)

    def run(self) -> None:
        # python-socketio starts the queue listener when the first client connects;
        # a follower needs the readings from the start (else it catches up each interval).
        if self.start_queue is not None:
            self.start_queue()
        super().run()

    def stop(self) -> None:
        super().stop()
        try:
            if self.lease.release():
                log.info("lease released at seq %d", self.history.last_seq)
        except redis.RedisError:
            pass  # it expires by itself

    def tick(self) -> Reading | None:
        reading = None
        claimed_at = self.clock()  # the lease runs from no earlier than this
        try:
            claim = self.lease.claim(self.history.last_seq)
            self.catch_up(claim.top)
            self._role(claim.leading)
            if claim.leading:
                reading = self.draw(claim.top)
            self.link.fine("store", "publish")  # Redis answers: a failed publish is over too
        except Fenced as exc:
            self.link.fine("store", "publish")
            self._role(False, str(exc))
        except (StoreError, redis.RedisError, OSError) as exc:
            self.history.store_errors += 1
            self.link.trouble("store", exc)
        self.history.store_error = self.link.problem
        if reading is not None and self.clock() - claimed_at >= self.lease_seconds:
            # Stalled past our own lease (a pause, a slow Redis): another process may be
            # ticking by now. The reading is stored; viewers get it through `resume`.
            log.warning("seq %d stored but not broadcast: this tick outlived its lease",
                        reading.seq)
            return None
        if reading is not None:
            self.broadcast(reading)
        return reading

    def _role(self, leading: bool, why: str | None = None) -> None:
        if leading == self.leading:
            return
        if leading:
            top = self.history.last_seq
            self.rng = random.Random(None if self.seed is None else f"{self.seed}:{top}")
            self.takeovers += 1
            log.info("leading: this process holds the lease and ticks after seq %d", top)
        elif self.leading is None:
            log.info("following: another process holds the lease")
        else:
            log.warning("following: lease lost at seq %d (%s)", self.history.last_seq,
                        why or "another process holds it")
        self.leading = leading

    def catch_up(self, top: int) -> None:
        """Fetch what Redis has beyond our last seq (missed messages, a takeover)."""
        if top <= self.history.last_seq:
            return
        readings, stats_seq, state = self.store.catch_up(self.history.last_seq, self.ring_size)
        with self._lock:
            fresh = [r for r in readings if r.seq > self.history.last_seq]
            if fresh:
                self.history.follow(fresh)
                self.last_tick_at = time.time()
            if (state is not None and stats_seq == self.history.last_seq
                    and stats_seq > self.stats_seq and self._same_range(state)):
                replace_stats(self.stats, state)
                self.stats_seq = stats_seq

    def draw(self, top: int) -> Reading:
        """Draw, store behind the fence, then (only then) keep the reading."""
        seq = max(top, self.history.last_seq) + 1
        reading = Reading(seq, self.rng.randint(self.lo, self.hi), self.wall_clock())
        stats = Stats.from_state(self.stats.state())
        stats.add(reading.value, seq)
        self.store.append(reading, stats.state())
        with self._lock:
            replace_stats(self.stats, stats.state())
            self.stats_seq = seq
            self.history.follow([reading])
        self.last_tick_at = reading.ts
        self.ticks += 1
        return reading

    def observe(self, data) -> None:
        """A reading seen on the queue (the leader's own included): follow it if it is next."""
        if not isinstance(data, dict):
            return
        try:
            reading = Reading(int(data["seq"]), int(data["value"]), float(data["ts"]))
        except (KeyError, TypeError, ValueError):
            return
        with self._lock:
            if reading.seq != self.history.last_seq + 1:
                return  # ours, or out of order: catch_up fills gaps from Redis
            self.history.follow([reading])
            if self.stats_seq == reading.seq - 1 and self.lo <= reading.value <= self.hi:
                self.stats.add(reading.value, reading.seq)
                self.stats_seq = reading.seq
        self.last_tick_at = time.time()


def open_store(settings: Settings) -> RedisStore:
    """The shared store; --db makes no sense here and is refused rather than ignored."""
    if settings.db is not None:
        raise ConfigError(
            "--db does not go with --message-queue: when scaled out, history and "
            "statistics live in Redis (unset --db / RANDOM_STREAM_DB)"
        )
    ttl = lease_ttl(settings.interval)
    store = open_redis_store(settings.message_queue, settings.retention, ttl)
    state = store.stats_state()
    if state is not None and (state["lo"], state["hi"]) != (settings.min, settings.max):
        store.close()
        raise ConfigError(
            f"the stream in Redis {store.where} draws from [{state['lo']}, {state['hi']}], not "
            f"[{settings.min}, {settings.max}]: pass matching --min/--max or another Redis database"
        )
    return store


def link_for(settings: Settings) -> RedisLink:
    """The RedisLink a scaled-out process reports its Redis troubles through."""
    return RedisLink(location(settings.message_queue))
