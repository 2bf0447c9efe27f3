"""The running stream: its source, ticker, history, statistics and live clients, wired once."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import sys
import threading
import time

from flask import Flask
from flask_socketio import SocketIO

from . import config
from .access import Access
from .admission import Admission
from .config import ConfigError, Settings
from .counters import Counters
from .fanout import Fanout
from .history import History
from .hosting import Slots
from .live import Live, origin_policy
from .metrics import BROADCAST_BUCKETS, Histogram, Metrics
from .presence import Presence, drop_after, period_for
from .server import FullCollections
from .sources import make_source
from .sse import Feed
from .stats import ObservedStats, Stats
from .transport import Transport
from .transport.hooks import EngineHooks

log = logging.getLogger(__name__)


class Stream:
    """One running stream: its ticker, history and statistics, its live clients.

    Built once, in order, by create_app(); nothing in it is replaced afterwards. What
    differs between one process and a cluster comes from `topology` (topology.py).
    """

    def __init__(self, app: Flask, settings: Settings, topology, transport: Transport) -> None:
        self.settings = settings
        self.topology = topology
        self.transport = transport
        self.store = store = topology.open_store(app)
        self.history = History(store, ring_size=settings.history)
        self.source = make_source(settings, settings.async_mode)
        self.stats = load_stats(store, settings, self.source.kind)
        self.feed = Feed(self.history, settings.history)
        self.collections = FullCollections()  # idle until serve() starts it
        origin_allowed = origin_policy(settings.cors_origins)
        self.socketio = socketio = SocketIO(
            app,
            async_mode=settings.async_mode,
            cors_allowed_origins=origin_allowed,
            always_connect=True,  # the CONNECT reply goes out before the `history` snapshot
            # Our handlers never wait long: a client's events run, in order, in the task
            # that read them, not in a new task each (a restart's herd sends 10,000 resumes).
            async_handlers=False,
            max_http_buffer_size=64 * 1024,  # a client only ever sends a tiny `resume`
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            logger=library_logger("socketio.server"),
            engineio_logger=library_logger("engineio.server"),
            # This process's own, scaled out too: a cluster shares readings, not Socket.IO.
            client_manager=transport.client_manager(),
        )
        # What `history`, /api/history and /api/latest say of the stream: its id, which a
        # client compares with the one its readings came from, and what the page draws with.
        self.info = {"id": self.history.stream_id, "min": settings.min, "max": settings.max,
                     "interval": settings.interval}
        # Who watches (presence.py): this process's Socket.IO clients and SSE readers, and
        # scaled out every process's; reported and broadcast at most once a period.
        period = period_for(settings.interval)
        self.presence = Presence(socketio, transport, topology.tally(drop_after(period)),
                                 here=lambda: self.live.clients + self.feed.clients,
                                 period=period)
        self.live = Live(socketio, self.history, self.info, settings.history, transport,
                         welcome=self.presence.greeting)  # `viewers`, after `history`
        self.counters = Counters(settings.max_connections)
        self.admission = Admission(self.counters, origin_allowed,
                                   max_per_address=settings.max_per_address,
                                   trusted_proxies=settings.trusted_proxies)
        # Private dashboards (--access-token, access.py); None: public, as by default.
        self.access = (Access(settings.access_token, self.admission, self.counters,
                              origins=settings.cors_origins)
                       if settings.access_token else None)
        self.hooks = EngineHooks(socketio, self.admission, self.counters, access=self.access)
        self.slots = Slots()  # a WSGI host worker's, once gunicorn.conf.py described it
        transport.install(socketio, self.hooks)
        self.broadcast_seconds = Histogram(BROADCAST_BUCKETS)
        keeper = topology.keeper(self.history, self.stats)
        # The one way a reading goes (fanout.py): kept first, then handed out, in this order.
        self.fanout = Fanout(keeper, [
            self.feed.publish,  # SSE: every GET /api/stream wakes and reads the history
            self.broadcast_seconds.timing(self.live.broadcast),  # Socket.IO, timed for /metrics
            # A full collection when one is due: the quiet moment until the next reading.
            lambda _reading: self.collections.after_broadcast(),
        ], last_seq=self.history.last_seq)
        self.ticker = topology.ticker(keeper, self.fanout.publish, source=self.source,
                                      socketio=socketio)
        self.metrics = Metrics(
            ticker=self.ticker, history=self.history, live=self.live, feed=self.feed,
            source=self.source, counters=self.counters, sends=transport.sends,
            broadcast_seconds=self.broadcast_seconds, presence=self.presence,
        )
        self.started_at: float | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Start the ticker (and, scaled out, the subscription); a second call does nothing."""
        with self._start_lock:
            if self.started_at is None:
                self.started_at = time.time()
                self.topology.start(self.fanout.publish, self.socketio)
                self.socketio.start_background_task(self.ticker.run)
                self.feed.start_heartbeat(self.socketio.start_background_task, self.socketio.sleep)
                self.socketio.start_background_task(self.presence.run)

    def stop(self) -> None:
        self.ticker.stop()
        self.topology.stop()
        self.presence.stop()  # scaled out, the other processes stop counting this one's now
        self.feed.close()  # every GET /api/stream ends now, so the server's stop is not held

    def stop_serving(self, stop_accepting=None) -> None:
        """A serving process's stop, once (server.serve's, and a gunicorn worker's:
        hosting.py): the stream, then every client with a close packet, waiting for none.
        `stop_accepting`, the server's, goes in between: clients told to go come straight
        back, and are refused now rather than joining (or queueing for) a server that stops."""
        if self.hooks.stopping:
            return
        log.info("stopping: %d client(s) connected", self.live.clients)
        self.stop()
        if stop_accepting is not None:
            stop_accepting()
        self.hooks.close_all()

    def stats_json(self) -> dict:
        """/api/stats: an observed source's histogram is of the readings new clients get."""
        if self.source.uniform:
            return self.stats.to_dict()
        return self.stats.to_dict(self.history.latest(self.settings.history))

    def close(self) -> None:
        self.store.close()

    def tick_age(self, now: float) -> float | None:
        last = self.ticker.last_tick_at or self.started_at
        return None if last is None else round(now - last, 3)

    def problems(self, now: float) -> list[str]:
        """What is wrong, for /healthz; empty when all is well."""
        found = []
        age = self.tick_age(now)
        if self.source.mode == "pull" and self.ticker.last_wake_at is not None:
            # A pull source may answer None or be slow: the schedule itself must be alive.
            age = round(now - self.ticker.last_wake_at, 3)
        if self.source.mode == "push":
            if not self.ticker.running:  # readings arrive when they arrive: no staleness
                found.append("ticker is not running")
        elif age is None or not self.ticker.running:
            found.append("ticker is not running")
        elif age > 3 * self.settings.interval + 1:
            found.append(f"last tick was {age:.1f}s ago (interval {self.settings.interval}s)")
        if self.history.store_error:
            found.append(f"store: {self.history.store_error}")
        if getattr(self.store, "problem", None):
            found.append(f"store: {self.store.problem}")
        return found


def load_stats(store, settings: Settings, kind: str = "random") -> Stats | ObservedStats:
    """The stats saved with the last reading, or fresh ones; refuses a changed source or range."""
    state = store.stats_state()
    if state is None:
        return Stats(settings.min, settings.max) if kind == "random" else ObservedStats(kind)
    stored_kind = state.get("kind", "random")  # databases from before sources are random
    if stored_kind != kind:
        raise ConfigError(
            f"the stored stream comes from --source {stored_kind}, not {kind}: "
            f"pass --source {stored_kind if stored_kind != 'pull' else 'module:callable'} "
            "or another --db"
        )
    if kind != "random":
        return ObservedStats.from_state(state)
    if (state["lo"], state["hi"]) != (settings.min, settings.max):
        raise ConfigError(
            f"the stored stream draws from [{state['lo']}, {state['hi']}], not "
            f"[{settings.min}, {settings.max}]: pass matching --min/--max or another --db"
        )
    return Stats.from_state(state)


def require(module: str, package: str, feature: str) -> None:
    """ConfigError naming the package to install when an optional feature's is missing."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{feature} needs the Python package {package}: pip install {package}")


def host_async_mode() -> str:
    """The async mode the host has set up: a gunicorn gevent worker or eventlet's monkey
    patching, else threads (flask run, gunicorn --threads, any plain WSGI server)."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("socket"):
        return "gevent"
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("socket"):
        return "eventlet"
    return "threading"


def settings_from_env() -> Settings:
    """Settings from RANDOM_STREAM_* alone, for a WSGI host; the async mode is the host's
    unless RANDOM_STREAM_ASYNC_MODE names one."""
    settings = config.load([])
    if config.ENV_PREFIX + "ASYNC_MODE" not in os.environ:
        settings = dataclasses.replace(settings, async_mode=host_async_mode())
    return settings


def library_logger(name: str) -> logging.Logger:
    """A logger for python-socketio/engineio that only speaks at ERROR.

    Given False, the libraries add their own stderr handler (every line printed twice,
    once unformatted); at NOTSET they log every packet at INFO, and at WARNING a client
    can make them log a line per message it sends. Their ERRORs come once per kind.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.ERROR)
    return logger
