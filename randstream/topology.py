"""One process, or a cluster through Redis: chosen once, here, from --message-queue.

Each choice provides the parts that differ, and nothing else differs:

| part                         | Local                      | Cluster (--message-queue)                  |
|------------------------------|----------------------------|--------------------------------------------|
| the store                    | SQLite (store.py)          | Redis (redis_store.py)                     |
| the keeper (fan-out step 1)  | fanout.Keep: stats, store  | scaleout.Follower: ring and stats follow   |
| the ticker                   | ticker.Ticker              | scaleout.SharedTicker: the lease holder's  |
| how readings reach us        | the ticker                 | the ticker, and the channel (subscription) |
| the viewers' tally           | presence.Alone: its own    | redis_presence.RedisTally: every process's |

python-socketio's client manager is this process's own in both (randstream/transport/__init__.py): a cluster
shares readings, not Socket.IO traffic. redis is imported only by the Cluster choice.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from flask import Flask

from . import paths, sources
from .config import ConfigError, Settings
from .fanout import Keep
from .history import History, Reading
from .presence import Alone
from .stats import ObservedStats, Stats
from .store import SqliteStore
from .ticker import Ticker


def choose(settings: Settings) -> Local | Cluster:
    """The topology the settings ask for; ConfigError if its packages are missing."""
    return Cluster(settings) if settings.message_queue else Local(settings)


class Local:
    """One process: readings drawn here, kept in SQLite, handed to this process's clients."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open_store(self, app: Flask) -> SqliteStore:
        """SQLite in the instance folder unless --db says otherwise."""
        path = self.settings.db
        if path is None:
            path = paths.default_db(app.instance_path)  # outside the venv when installed
        elif path != ":memory:":
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise ConfigError(f"--db {path}: folder {parent} does not exist")
        return SqliteStore(path, retention=self.settings.retention, keep=self.settings.tier_keep())

    def keeper(self, history: History, stats: Stats | ObservedStats) -> Keep:
        return Keep(history, stats)

    def ticker(self, keeper: Keep, publish: Callable[[Reading], object], *, source,
               socketio) -> Ticker:
        s = self.settings
        return Ticker(
            keeper.history, publish, interval=s.interval, lo=s.min, hi=s.max, seed=s.seed,
            sleep=socketio.sleep, source=source, spawn=socketio.start_background_task,
            off_loop=sources.off_loop(socketio.async_mode),
        )

    def tally(self, drop_after: float) -> Alone:
        """Its viewers are all the stream has."""
        return Alone()

    def start(self, publish: Callable[[Reading], object], socketio) -> None:
        """Readings reach this process from its own ticker alone: nothing to start."""

    def stop(self) -> None:
        pass


class Cluster:
    """Processes sharing one stream through Redis: one lease holder draws, all hand out.

    Its modules need redis, so they are imported here, not at the top of this one.
    """

    def __init__(self, settings: Settings) -> None:
        from .stream import require

        require("redis", "redis", "--message-queue")
        from . import scaleout

        self.settings = settings
        self.link = scaleout.link_for(settings)  # every Redis trouble, logged once an outage
        self.store = None  # open_store() comes first
        self.subscription = None

    def open_store(self, app: Flask):
        """The shared store in Redis (--db is refused); StoreError if Redis does not answer."""
        from . import scaleout

        self.store = scaleout.open_store(self.settings)
        return self.store

    def keeper(self, history: History, stats: Stats | ObservedStats):
        from . import scaleout

        return scaleout.Follower(history, stats, self.store, self.settings.min, self.settings.max,
                                 ring_size=self.settings.history)

    def ticker(self, keeper, publish: Callable[[Reading], object], *, source, socketio):
        from . import scaleout

        return scaleout.SharedTicker(
            keeper, publish, settings=self.settings, sleep=socketio.sleep, store=self.store,
            link=self.link, source=source, spawn=socketio.start_background_task,
            off_loop=sources.off_loop(socketio.async_mode),
        )

    def tally(self, drop_after: float):
        """Every process's viewers, summed in Redis; a process silent for `drop_after`
        seconds is no longer counted."""
        from .redis_presence import RedisTally

        return RedisTally(self.store, self.link, drop_after)

    def start(self, publish: Callable[[Reading], object], socketio) -> None:
        """The one subscription to the channel of readings, from now on (before the ticker:
        a follower hands out readings from its first interval)."""
        from .subscription import Subscription

        self.subscription = Subscription(self.settings.message_queue, self.store.keys.live,
                                         self.link, publish, socketio.sleep)
        socketio.start_background_task(self.subscription.run)

    def stop(self) -> None:
        if self.subscription is not None:
            self.subscription.stop()
