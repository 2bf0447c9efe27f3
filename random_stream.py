"""Random number stream: draws random.randint(0, 100) every second and streams it live.

    python random_stream.py            # then open http://localhost:5000
    python random_stream.py --help     # interval, range, seed, storage, scale-out

One background task (the ticker) draws each reading, stores it, then broadcasts it
over Socket.IO to every dashboard. The parts live in the `randstream` package.
"""

if __name__ == "__main__":
    # eventlet and gevent must patch the standard library before Flask imports it.
    import sys

    from randstream.server import prepare_async_mode

    prepare_async_mode(sys.argv[1:])

import logging
import os
import sys

from flask import Flask

from randstream import config, sources, sse, topology, web
from randstream.config import ConfigError, Settings
from randstream.history import StoreError
from randstream.stream import StartOnFirstRequest, Stream, require, settings_from_env
from randstream.transport import Transport

log = logging.getLogger("random_stream")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
        app.wsgi_app = StartOnFirstRequest(app.wsgi_app, app.extensions["stream"])
        log.info("app created for a WSGI host: async mode %s, pid %d; the ticker starts "
                 "with the first request", settings.async_mode, os.getpid())
        return app
    if settings.async_mode != "threading":
        require(settings.async_mode, settings.async_mode, f"--async-mode {settings.async_mode}")
    chosen = topology.choose(settings)  # one process, or a cluster through Redis
    app = Flask(
        "random_stream", root_path=os.path.dirname(os.path.abspath(__file__)),
        instance_relative_config=True,
    )
    transport = Transport(settings.async_mode, settings.fast_path)
    stream = Stream(app, settings, chosen, transport)
    app.extensions["stream"] = stream
    web.init_app(app)
    sources.init_app(app, stream.source)
    stream.guard.init_app(app)
    sse.init_app(app)
    transport.log_choice()
    return app


def main(argv: list[str] | None = None) -> None:
    from randstream.server import bind, fail, fd_budget, raise_fd_limit, serve

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
