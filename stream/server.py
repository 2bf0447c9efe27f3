"""Serving: the async mode, the listening socket, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import socket
import sys
import time
import warnings

from .config import ENV_PREFIX, ConfigError

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 2048
SEND_BUFFER = 64 * 1024


def prepare_async_mode(argv: list[str]) -> str:
    """Monkey-patch for eventlet or gevent before anything else imports the socket module."""
    mode = os.environ.get(ENV_PREFIX + "ASYNC_MODE", "eventlet")
    for i, arg in enumerate(argv):
        if arg == "--async-mode" and i + 1 < len(argv):
            mode = argv[i + 1]
        elif arg.startswith("--async-mode="):
            mode = arg.split("=", 1)[1]
    if mode == "eventlet":
        with warnings.catch_warnings():
            # eventlet prints a six-line deprecation notice at import; we log one line instead.
            warnings.simplefilter("ignore")
            import eventlet
        eventlet.monkey_patch()
    elif mode == "gevent":
        from gevent import monkey

        monkey.patch_all()
    return mode


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or ConfigError if the address is taken.

    Deliberately without SO_REUSEPORT (which eventlet.listen sets): a second
    instance on the same port must fail loudly, not silently share connections.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} cannot be resolved: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this: a stalled client holds at most ~2x this in the kernel,
    # instead of an autotuned buffer of megabytes, and then backs up into its own queue.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"--port {port} is already in use on {host}") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(LISTEN_BACKLOG)
    return sock


def raise_fd_limit(wanted: int) -> None:
    """Each client is a file descriptor; lift the soft limit toward the hard one."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def serve(app, sock: socket.socket) -> None:
    """Serve until SIGINT or SIGTERM, then stop the ticker, disconnect clients and return."""
    stream = app.extensions["random_stream"]
    socketio = app.extensions["socketio"]
    mode = socketio.async_mode
    settings = stream.settings
    stopper = _mode_server(mode, app, sock, settings.max_connections, stream.transport)

    def shutdown() -> None:
        log.info("stopping: %d client(s) connected", stream.live.clients)
        stream.stop()
        stream.guard.close_all()  # every client, with a close packet, waiting for none
        stopper.stop()

    def on_signal(signum, frame) -> None:
        signal.signal(signum, signal.SIG_DFL)  # a second signal stops at once
        socketio.start_background_task(shutdown)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host, port = sock.getsockname()[:2]
    note = " (deprecated upstream; gevent is the maintained alternative)" if mode == "eventlet" else ""
    log.info("serving http://%s:%d, async mode %s%s, pid %d", _url_host(host), port, mode, note, os.getpid())
    stream.collections.start()
    stream.start()
    stopper.run()
    stream.close()
    log.info("stopped")


class FullCollections:
    """Full garbage collections at a moment of our choosing: right after a broadcast.

    Python's own full collections scan every tracked object: with 10,000 clients that is
    1.7 million objects and a 1.5 s pause, at whatever moment the allocator decides, and
    the ticker waits through it. Here, from start() on, start-up objects are frozen out of
    collection, the automatic full collection is switched off, and one runs every EVERY
    seconds just after a reading went out, when the next tick is furthest away.
    """

    EVERY = 60.0  # seconds; cyclic garbage of closed connections lives at most this long

    def __init__(self) -> None:
        self.last: float | None = None  # Python's own collections until start()

    def start(self) -> None:
        """Take over full collections (serve() does, just before the ticker starts)."""
        gc.collect()
        gc.freeze()  # modules, the app, the stream: never garbage, never scanned again
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 1_000_000)  # no automatic full collection
        self.last = time.monotonic()

    def after_broadcast(self) -> None:
        if self.last is None:
            return
        now = time.monotonic()
        if now - self.last >= self.EVERY:
            self.last = now
            gc.collect()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _mode_server(mode: str, app, sock: socket.socket, max_connections: int, transport):
    if mode == "eventlet":
        return _EventletServer(app, sock, max_connections, transport.http_protocol())
    if mode == "gevent":
        return _GeventServer(app, sock, max_connections)
    return _ThreadingServer(app, sock)


class _EventletServer:
    def __init__(self, app, sock, max_connections, protocol=None):
        self.app, self.sock, self.max_connections = app, sock, max_connections
        self.protocol = protocol  # stream.transport's, or None for eventlet's own

    def run(self) -> None:
        import eventlet
        import eventlet.wsgi

        quiet = logging.getLogger("eventlet.wsgi.server")
        quiet.setLevel(logging.WARNING)
        # socketio.run() would pass eventlet's defaults: max_size=1024 connections and
        # debug=True, which writes Python tracebacks to clients. Neither is wanted here.
        self.thread = eventlet.spawn(
            eventlet.wsgi.server, self.sock, self.app, log=quiet, log_output=False,
            debug=False, max_size=self.max_connections + 64,  # room to refuse past the cap
            protocol=self.protocol or eventlet.wsgi.HttpProtocol,
        )
        self.thread.wait()

    def stop(self) -> None:
        # eventlet.wsgi.server ends its accept loop on SystemExit, then waits for the
        # open connections, which shutdown() has closed already.
        self.thread.kill(SystemExit)


class _GeventServer:
    def __init__(self, app, sock, max_connections):
        from gevent.pool import Pool
        from gevent.pywsgi import WSGIServer

        self.server = WSGIServer(
            sock, app, log=None, error_log=logging.getLogger("gevent.pywsgi"),
            spawn=Pool(max_connections + 64),
        )

    def run(self) -> None:
        self.server.serve_forever()

    def stop(self) -> None:
        self.server.stop(timeout=2)


class _ThreadingServer:
    def __init__(self, app, sock):
        from werkzeug.serving import make_server

        host, port = sock.getsockname()[:2]
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.server = make_server(host, port, app, threaded=True, fd=sock.fileno())

    def run(self) -> None:
        self.server.serve_forever()

    def stop(self) -> None:
        self.server.shutdown()


def fail(message: str) -> None:
    print(f"random_stream: error: {message}", file=sys.stderr)
    raise SystemExit(2)
