"""Random number stream: draws random.randint(0, 100) every second and streams it live.

    python random_stream.py            # then open http://localhost:5000
    python random_stream.py --help     # interval, range, seed, storage, scale-out

One background task (the ticker) draws each reading, stores it, then broadcasts it
over Socket.IO to every dashboard. The parts live in the `stream` package.
"""

if __name__ == "__main__":
    # eventlet and gevent must patch the standard library before Flask imports it.
    import sys

    from stream.server import prepare_async_mode

    prepare_async_mode(sys.argv[1:])

import logging
import os
import threading
import time

from flask import Flask
from flask_socketio import SocketIO

from stream import config, scaleout, web
from stream.config import ConfigError, Settings
from stream.guard import Guard, library_logger
from stream.history import History, StoreError
from stream.live import Live, origin_policy
from stream.metrics import Metrics
from stream.server import FullCollections
from stream.stats import Stats
from stream.store import SqliteStore
from stream.ticker import Ticker
from stream.transport import Transport

log = logging.getLogger("random_stream")


class Service:
    """One running service: its stream's ticker, history and statistics, its live clients.

    Built once, in order, by create_app(); nothing in it is replaced afterwards.
    """

    def __init__(self, app: Flask, settings: Settings, store, transport: Transport) -> None:
        self.settings = settings
        self.store = store
        self.transport = transport
        self.history = History(store, ring_size=settings.history)
        self.stats = load_stats(store, settings)
        self.collections = FullCollections()  # idle until serve() starts it
        link = scaleout.link_for(settings) if settings.message_queue else None
        self.socketio = socketio = SocketIO(
            app,
            async_mode=settings.async_mode,
            cors_allowed_origins=origin_policy(settings.cors_origins),
            always_connect=True,  # the CONNECT reply goes out before the `history` snapshot
            max_http_buffer_size=64 * 1024,  # a client only ever sends a tiny `resume`
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            logger=library_logger("socketio.server"),
            engineio_logger=library_logger("engineio.server"),
            # The Redis message queue when scaled out, else the in-process one.
            client_manager=transport.client_manager(
                settings.message_queue, link, on_reading=self.follow_reading),
        )
        stream_info = {"min": settings.min, "max": settings.max, "interval": settings.interval}
        self.live = Live(socketio, self.history, stream_info, settings.history, transport)
        self.guard = Guard(socketio, settings.max_connections)
        transport.install(socketio, self.guard)  # after the guard: the fast connect hook runs first
        self.metrics = Metrics(self)
        if settings.message_queue:  # one ticker per cluster: the lease holder draws
            self.ticker = scaleout.SharedTicker(
                self.history, self.stats, self.broadcast, settings=settings,
                sleep=socketio.sleep, store=store, link=link,
                start_queue=transport.queue_starter(socketio),
            )
        else:
            self.ticker = Ticker(
                self.history, self.stats, self.broadcast,
                interval=settings.interval, lo=settings.min, hi=settings.max, seed=settings.seed,
                sleep=socketio.sleep,
            )
        self.started_at: float | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Start the ticker; a second call does nothing (one ticker per stream)."""
        with self._start_lock:
            if self.started_at is None:
                self.started_at = time.time()
                self.socketio.start_background_task(self.ticker.run)

    def broadcast(self, reading) -> None:
        with self.metrics.broadcast_seconds.time():
            self.live.broadcast(reading)
        self.collections.after_broadcast()  # the quiet moment until the next tick

    def follow_reading(self, data) -> None:
        """A reading from the message queue (scaled out): the ticker follows it."""
        self.ticker.observe(data)

    def stop(self) -> None:
        self.ticker.stop()

    def close(self) -> None:
        self.store.close()

    def tick_age(self, now: float) -> float | None:
        last = self.ticker.last_tick_at or self.started_at
        return None if last is None else round(now - last, 3)

    def problems(self, now: float) -> list[str]:
        """What is wrong, for /healthz; empty when all is well."""
        found = []
        age = self.tick_age(now)
        if age is None or not self.ticker.running:
            found.append("ticker is not running")
        elif age > 3 * self.settings.interval + 1:
            found.append(f"last tick was {age:.1f}s ago (interval {self.settings.interval}s)")
        if self.history.store_error:
            found.append(f"store: {self.history.store_error}")
        return found


def load_stats(store, settings: Settings) -> Stats:
    """The stats saved with the last reading, or fresh ones; refuses a changed range."""
    state = store.stats_state()
    if state is None:
        return Stats(settings.min, settings.max)
    if (state["lo"], state["hi"]) != (settings.min, settings.max):
        raise ConfigError(
            f"the stored stream draws from [{state['lo']}, {state['hi']}], not "
            f"[{settings.min}, {settings.max}]: pass matching --min/--max or another --db"
        )
    return Stats.from_state(state)


def open_store(app: Flask, settings: Settings):
    """SQLite in the instance folder unless --db says otherwise; Redis when scaled out."""
    if settings.message_queue:
        return scaleout.open_store(settings)
    path = settings.db
    if path is None:
        os.makedirs(app.instance_path, exist_ok=True)
        path = os.path.join(app.instance_path, "random_stream.sqlite3")
    elif path != ":memory:":
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ConfigError(f"--db {path}: folder {parent} does not exist")
    return SqliteStore(path, retention=settings.retention)


def create_app(settings: Settings | None = None) -> Flask:
    """Create the app and its service; the ticker starts when the server does."""
    settings = settings or Settings()
    app = Flask(
        "random_stream", root_path=os.path.dirname(os.path.abspath(__file__)),
        instance_relative_config=True,
    )
    transport = Transport(settings.async_mode, settings.fast_path, settings.message_queue)
    service = Service(app, settings, open_store(app, settings), transport)
    app.extensions["random_stream"] = service
    web.init_app(app)
    service.guard.init_app(app)
    transport.log_choice()
    return app


def main(argv: list[str] | None = None) -> None:
    from stream.server import bind, fail, raise_fd_limit, serve

    try:
        settings = config.load(argv)
    except ConfigError as exc:
        fail(str(exc))
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise_fd_limit(settings.max_connections + 256)
    try:
        sock = bind(settings.host, settings.port)
        try:
            app = create_app(settings)
        except BaseException:
            sock.close()
            raise
    except (ConfigError, StoreError) as exc:
        fail(str(exc))
    serve(app, sock)


if __name__ == "__main__":
    main()
