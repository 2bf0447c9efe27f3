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

import dataclasses
import importlib.util
import logging
import os
import sys
import threading
import time

from flask import Flask
from flask_socketio import SocketIO

from stream import config, sources, sse, web
from stream.config import ConfigError, Settings
from stream.guard import Guard, library_logger
from stream.history import History, StoreError
from stream.live import Live, origin_policy
from stream.metrics import Metrics
from stream.server import FullCollections
from stream.sources import make_source
from stream.sse import Feed
from stream.stats import ObservedStats, Stats
from stream.store import SqliteStore
from stream.ticker import Ticker
from stream.transport import Transport

log = logging.getLogger("random_stream")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Service:
    """One running service: its stream's ticker, history and statistics, its live clients.

    Built once, in order, by create_app(); nothing in it is replaced afterwards.
    """

    def __init__(self, app: Flask, settings: Settings, store, transport: Transport) -> None:
        self.settings = settings
        self.store = store
        self.transport = transport
        self.history = History(store, ring_size=settings.history)
        self.source = make_source(settings, settings.async_mode)
        self.stats = load_stats(store, settings, self.source.kind)
        self.feed = Feed(self.history, settings.history)
        self.history.on_new = self.feed.publish
        self.collections = FullCollections()  # idle until serve() starts it
        if settings.message_queue:
            from stream import scaleout  # needs redis: imported only when scaled out

            link = scaleout.link_for(settings)
        else:
            link = None
        self.socketio = socketio = SocketIO(
            app,
            async_mode=settings.async_mode,
            cors_allowed_origins=origin_policy(settings.cors_origins),
            always_connect=True,  # the CONNECT reply goes out before the `history` snapshot
            # Our handlers never wait long: a client's events run, in order, in the task
            # that read them, not in a new task each (a restart's herd sends 10,000 resumes).
            async_handlers=False,
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
        self.guard = Guard(socketio, settings.max_connections,
                           max_per_address=settings.max_per_address,
                           trusted_proxies=settings.trusted_proxies)
        transport.install(socketio, self.guard)  # after the guard: the fast connect hook runs first
        self.metrics = Metrics(self)
        if settings.message_queue:  # one ticker per cluster: the lease holder draws
            self.ticker = scaleout.SharedTicker(
                self.history, self.stats, self.broadcast, settings=settings,
                sleep=socketio.sleep, store=store, link=link,
                start_queue=transport.queue_starter(socketio), source=self.source,
                spawn=socketio.start_background_task,
                off_loop=sources.off_loop(socketio.async_mode),
            )
        else:
            self.ticker = Ticker(
                self.history, self.stats, self.broadcast,
                interval=settings.interval, lo=settings.min, hi=settings.max, seed=settings.seed,
                sleep=socketio.sleep, source=self.source, spawn=socketio.start_background_task,
                off_loop=sources.off_loop(socketio.async_mode),
            )
        self.started_at: float | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Start the ticker; a second call does nothing (one ticker per stream)."""
        with self._start_lock:
            if self.started_at is None:
                self.started_at = time.time()
                self.socketio.start_background_task(self.ticker.run)
                self.feed.start_heartbeat(self.socketio.start_background_task, self.socketio.sleep)

    def broadcast(self, reading) -> None:
        with self.metrics.broadcast_seconds.time():
            self.live.broadcast(reading)
        self.collections.after_broadcast()  # the quiet moment until the next tick

    def follow_reading(self, data) -> None:
        """A reading from the message queue (scaled out): the ticker follows it."""
        self.ticker.observe(data)

    def stop(self) -> None:
        self.ticker.stop()
        self.feed.close()  # every GET /api/stream ends now, so the server's stop is not held

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


def open_store(app: Flask, settings: Settings):
    """SQLite in the instance folder unless --db says otherwise; Redis when scaled out."""
    if settings.message_queue:
        from stream import scaleout

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


class StartOnFirstRequest:
    """WSGI wrapper: the ticker starts with the first request this process serves.

    Under `flask run --debug` the reloader's parent builds the app too but never serves,
    so only the serving process ticks; start() itself runs at most once.
    """

    def __init__(self, wsgi_app, service: Service) -> None:
        self.wsgi_app, self.service = wsgi_app, service

    def __call__(self, environ, start_response):
        if self.service.started_at is None:
            self.service.start()
        return self.wsgi_app(environ, start_response)


def create_app(settings: Settings | None = None) -> Flask:
    """Create the app and its stream; the caller starts the ticker (`main()` does).

    Without settings (`flask --app random_stream run`, gunicorn) they come from the
    RANDOM_STREAM_* variables, an invalid one is one line on stderr and exit status 2,
    and the ticker starts with the first request served.
    """
    if settings is None:
        try:
            settings = settings_from_env()
            if not logging.getLogger().handlers:  # the host set none up: our lines, as main() logs them
                logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
            app = create_app(settings)
        except (ConfigError, StoreError) as exc:
            print(f"random_stream: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        app.wsgi_app = StartOnFirstRequest(app.wsgi_app, app.extensions["random_stream"])
        log.info("app created for a WSGI host: async mode %s, pid %d; the ticker starts "
                 "with the first request", settings.async_mode, os.getpid())
        return app
    if settings.async_mode != "threading":
        require(settings.async_mode, settings.async_mode, f"--async-mode {settings.async_mode}")
    if settings.message_queue:
        require("redis", "redis", "--message-queue")
    app = Flask(
        "random_stream", root_path=os.path.dirname(os.path.abspath(__file__)),
        instance_relative_config=True,
    )
    transport = Transport(settings.async_mode, settings.fast_path, settings.message_queue)
    service = Service(app, settings, open_store(app, settings), transport)
    app.extensions["random_stream"] = service
    web.init_app(app)
    sources.init_app(app, service.source)
    service.guard.init_app(app)
    sse.init_app(app)
    transport.log_choice()
    return app


def main(argv: list[str] | None = None) -> None:
    from stream.server import bind, fail, fd_budget, raise_fd_limit, serve

    try:
        settings = config.load(argv)
    except ConfigError as exc:
        fail(str(exc))
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
    raise_fd_limit(fd_budget(settings.max_connections))
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
    # Stopped: the store is closed and the log is written. What is left is freeing every
    # connection's objects one by one, a second with 10,000 clients, which the operating
    # system does at once: the next server (a restart) can start that much sooner.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
