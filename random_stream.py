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

from randstream import config, paths, signin, sources, sse, stack, topology, web
from randstream.config import ConfigError, Settings
from randstream.history import StoreError
from randstream.server import fd_budget, raise_fd_limit
from randstream.stream import Stream, require, settings_from_env
from randstream.transport import Transport

log = logging.getLogger("random_stream")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HOST_LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


def create_app(settings: Settings | None = None) -> Flask:
    """Create the app and its stream; the caller starts the ticker (`main()` does).

    Without settings (`flask --app random_stream run`, gunicorn) they come from the
    RANDOM_STREAM_* variables, an invalid one is one line on stderr and exit status 2,
    and the ticker starts when gunicorn.conf.py's hook says the worker is ready
    (randstream/hosting.py), else with the first request served.
    """
    if settings is None:
        try:
            settings = settings_from_env()
            if not logging.getLogger().handlers:  # the host set none up: our lines, as main() logs them
                # with the process id, as gunicorn's own: its workers share one log
                logging.basicConfig(level=settings.log_level, format=HOST_LOG_FORMAT)
            # gunicorn leaves the soft descriptor limit as it found it (1,024 on stock
            # systems): each client is a descriptor, as in main().
            raise_fd_limit(fd_budget(settings.max_connections))
            app = _create_app(settings, wsgi_host=True)
        except (ConfigError, StoreError) as exc:
            print(f"random_stream: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        log.info("app created for a WSGI host: async mode %s, pid %d; the ticker starts "
                 "when gunicorn.conf.py says the worker is ready, else with the first request",
                 settings.async_mode, os.getpid())
        return app
    return _create_app(settings, wsgi_host=False)


def _create_app(settings: Settings, *, wsgi_host: bool) -> Flask:
    """The app for `settings`; a WSGI host's starts its ticker with the first request."""
    if settings.async_mode != "threading":
        require(settings.async_mode, settings.async_mode, f"--async-mode {settings.async_mode}")
    chosen = topology.choose(settings)  # one process, or a cluster through Redis
    app = Flask(
        "random_stream", root_path=str(paths.ASSETS),  # templates/, static/
        instance_relative_config=True,
    )
    transport = Transport(settings.async_mode, settings.fast_path, wsgi_host=wsgi_host)
    stream = Stream(app, settings, chosen, transport)
    app.extensions["stream"] = stream
    web.init_app(app)
    sources.init_app(app, stream.source)
    sse.init_app(app)
    signin.init_app(app, stream.access)  # private dashboards: the sign-in routes
    # SocketIO(app) left Flask-SocketIO's middleware in app.wsgi_app: the stack goes around it.
    # What is too late for an answer goes on to the server: gevent's and every WSGI host's
    # log it; eventlet's, as main() runs it, would drop it (log_output=False).
    app.wsgi_app = stack.build(app.wsgi_app, stream.admission, stream.hooks,
                               start_on_first_request=stream if wsgi_host else None,
                               host_logs_failures=wsgi_host or settings.async_mode != "eventlet",
                               hand_over=transport.hand_over, access=stream.access)
    transport.log_choice()
    return app


def main(argv: list[str] | None = None) -> None:
    from randstream.server import bind, fail, serve

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
