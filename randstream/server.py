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
from functools import partial

from .arrivals import RECHECK, Arrivals
from .config import ENV_PREFIX, ConfigError
from .waiting import ANSWER_DESCRIPTORS, PLAIN_ANSWERS, WAITING_LIMIT, Waiting

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 65535  # the kernel caps it (net.core.somaxconn: 4096 on current Linux)
SEND_BUFFER = 64 * 1024
REQUEST_TIMEOUT = 5.0  # seconds a connection may wait (idle or half-sent) for its next request
ACCEPT_BATCH = 16  # connections accepted in a row before other tasks get a turn
FD_RESERVE = 64  # descriptors besides clients: the listener, the database, Redis, logs
ANSWERS_FDS = PLAIN_ANSWERS * ANSWER_DESCRIPTORS  # the plain answers' share of descriptors
WEBSOCKET_LINGER = 5.0  # threading: seconds an ended WebSocket's reader has to finish its close
# accept() errors that mean "out of descriptors or memory": wait and retry, never exit.
EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# accept() errors about one connection that went away before it was accepted: skip it.
TRANSIENT = {errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET, errno.EPERM}


def prepare_async_mode(argv: list[str]) -> str:
    """Monkey-patch for eventlet or gevent before anything else imports the socket module."""
    mode = os.environ.get(ENV_PREFIX + "ASYNC_MODE", "eventlet")
    for i, arg in enumerate(argv):
        if arg == "--async-mode" and i + 1 < len(argv):
            mode = argv[i + 1]
        elif arg.startswith("--async-mode="):
            mode = arg.split("=", 1)[1]
    try:
        if mode == "eventlet":
            with warnings.catch_warnings():
                # eventlet prints a six-line deprecation notice at import; we log one line instead.
                warnings.simplefilter("ignore")
                import eventlet
            eventlet.monkey_patch()
        elif mode == "gevent":
            from gevent import monkey

            monkey.patch_all()
    except ModuleNotFoundError:
        fail(f"--async-mode {mode} needs the Python package {mode}: pip install {mode}")
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
    if hasattr(socket, "TCP_DEFER_ACCEPT"):  # Linux
        # A connection reaches accept() once its request arrives: silent ones stay in the
        # kernel (no descriptor, no task) for several seconds (Linux rounds this up to its
        # SYN-ACK retries, 7 s), and a client slow to write is not taken for a silent one.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, int(REQUEST_TIMEOUT))
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"--port {port} is already in use on {host}") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(LISTEN_BACKLOG)
    return sock


def fd_budget(max_connections: int) -> int:
    """Descriptors the server plans for: every session, the waiting connections, the plain
    answers in progress (stack.Answering, two each), a reserve."""
    return max_connections + WAITING_LIMIT + ANSWERS_FDS + FD_RESERVE


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


def fd_limit() -> int | None:
    """The soft descriptor limit, or None where there is none to read."""
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def waiting_limit(max_connections: int, limit: int | None) -> int:
    """WAITING_LIMIT, or less when the descriptor limit leaves less beside the sessions and
    the plain answers."""
    if limit is None:
        return WAITING_LIMIT
    return max(16, min(WAITING_LIMIT, limit - max_connections - ANSWERS_FDS - FD_RESERVE))


def pool_size(max_connections: int, waiting: Waiting) -> int:
    """Connection tasks the server runs at once: every session, every connection waiting
    for its request, every plain answer, and room to refuse past them; each is capped
    on its own, so none of them can take the slots of the others."""
    return max_connections + waiting.limit + PLAIN_ANSWERS + FD_RESERVE


class _Listener:
    """The listening socket as eventlet.wsgi.server sees it: accept() never raises EMFILE.

    eventlet's accept loop re-raises any accept error it does not know, and the server
    ends. Here running out of descriptors closes the longest-waiting idle connection and
    retries with a growing pause (one line in the log); a connection that vanished before
    accept() is skipped.
    """

    def __init__(self, sock: socket.socket, waiting: Waiting, sleep,
                 arrivals: Arrivals | None = None) -> None:
        self.sock = sock
        self.waiting = waiting
        self.sleep = sleep
        self.arrivals = arrivals  # plain requests before a herd's handshakes (arrivals.py)
        self.exhausted = 0  # accept() calls that failed for want of descriptors
        self.accepted = 0
        self.closing = False  # stop_accepting(): the listener is shut down
        self._short = False
        self._logged_at = float("-inf")

    def accept(self):
        delay = 0.01
        while True:
            try:
                # What arrivals.py took from the kernel first (it takes no more than
                # Waiting has room for), then the kernel's next one.
                found = self.arrivals.next() if self.arrivals is not None else None
                if found is None:
                    if self.arrivals is not None and self.arrivals.early:
                        self.sleep(RECHECK)  # requests still on their way: look again shortly
                        continue
                    if not self.waiting.has_room():  # the server is behind: let the queue wait
                        self.sleep(0.005)
                        continue
                    found = self.sock.accept()
                conn, address = found
            except OSError as exc:
                if self.closing:
                    # Shut down for the stop: wait here for stop(), which ends this loop.
                    self.sleep(1.0)
                    continue
                if exc.errno in TRANSIENT:
                    continue
                if exc.errno not in EXHAUSTED:
                    raise
                self._out_of_descriptors(exc)
                self.waiting.evict()  # its descriptor is free once its task has run
                self.sleep(delay)
                delay = min(1.0, delay * 2)
                continue
            if self._short:
                self._short = False
                log.info("accepting connections again")
            self.waiting.add(conn, address)
            self.accepted += 1
            if self.accepted % ACCEPT_BATCH == 0:
                # eventlet's loop accepts the whole backlog before anything else runs:
                # let the ticker and the open connections in between. (So a herd's
                # handshakes go out ACCEPT_BATCH to a turn of the loop.)
                self.sleep(0)
            return conn, address

    def _out_of_descriptors(self, exc: OSError) -> None:
        self.exhausted += 1
        if self._short:
            return
        self._short = True
        now = time.monotonic()
        if now - self._logged_at >= 60:  # one line per episode, at most one a minute
            self._logged_at = now
            log.warning("cannot accept connections: %s; closing idle connections and retrying "
                        "(raise `ulimit -n` or lower --max-connections)", exc.strerror)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def serve(app, sock: socket.socket) -> None:
    """Serve until SIGINT or SIGTERM, then stop the ticker, disconnect clients and return."""
    stream = app.extensions["stream"]
    socketio = app.extensions["socketio"]
    mode = socketio.async_mode
    settings = stream.settings
    waiting = Waiting(waiting_limit(settings.max_connections, fd_limit()), counters=stream.counters,
                      trusted=stream.admission.trusted)
    # A client that stops reading (an event stream, a download) holds its task only this
    # long; a live one has read something within a ping interval. The same bound as the
    # direct path's and engine.io's own writers.
    send_timeout = settings.ping_interval + settings.ping_timeout
    # New connections in serving order (arrivals.py): a herd's handshakes after the rest.
    counters = stream.counters
    make_arrivals = partial(Arrivals, path=socketio.sockio_mw.engineio_path,
                            room=lambda: counters.max_connections - counters.open_connections,
                            refused=partial(counters.refuse, "busy"))
    stopper = _mode_server(mode, app, sock, settings.max_connections, waiting, stream.transport,
                           send_timeout, make_arrivals)

    def shutdown() -> None:
        stream.stop_serving(stopper.stop_accepting)
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


def _mode_server(mode: str, app, sock: socket.socket, max_connections: int, waiting: Waiting,
                 transport, send_timeout: float, make_arrivals):
    """The runtime's server; `make_arrivals(accept_nowait)` makes its Arrivals (arrivals.py)."""
    if mode == "eventlet":
        protocol = transport.http_protocol(waiting, REQUEST_TIMEOUT)
        accept_nowait = transport.accept_nowait()  # None: the kernel's order, as eventlet's own
        return _EventletServer(app, sock, max_connections, waiting, protocol, send_timeout,
                               make_arrivals(partial(accept_nowait, sock), waiting=waiting)
                               if accept_nowait else None)
    if mode == "gevent":
        handler = transport.http_protocol(waiting, REQUEST_TIMEOUT, send_timeout)
        return _GeventServer(app, sock, max_connections, waiting, handler, make_arrivals)
    return _ThreadingServer(app, sock)


class _EventletServer:
    def __init__(self, app, sock, max_connections, waiting, protocol, send_timeout, arrivals):
        self.app, self.sock, self.max_connections = app, sock, max_connections
        self.waiting, self.send_timeout = waiting, send_timeout
        self.protocol = protocol  # from randstream.transport: deadline, refusals, detach
        self.arrivals = arrivals

    def run(self) -> None:
        import eventlet
        import eventlet.wsgi

        quiet = logging.getLogger("eventlet.wsgi.server")
        quiet.setLevel(logging.WARNING)
        # socketio.run() would pass eventlet's defaults: max_size=1024 connections and
        # debug=True, which writes Python tracebacks to clients. Neither is wanted here.
        # Slots: pool_size().
        # keepalive=REQUEST_TIMEOUT tells clients how long an idle connection is kept; the
        # protocol's own deadline enforces it (and covers a half-sent request too).
        self.listener = _Listener(self.sock, self.waiting, eventlet.sleep, self.arrivals)
        self.thread = eventlet.spawn(
            eventlet.wsgi.server, self.listener,
            self.app, log=quiet, log_output=False, debug=False,
            max_size=pool_size(self.max_connections, self.waiting),
            keepalive=REQUEST_TIMEOUT, protocol=self.protocol, socket_timeout=self.send_timeout,
        )
        self.thread.wait()

    def stop_accepting(self) -> None:
        self.listener.closing = True
        _shut_listener(self.sock)
        if self.arrivals is not None:
            self.arrivals.close()

    def stop(self) -> None:
        # eventlet.wsgi.server ends its accept loop on SystemExit, then waits for the
        # open connections, which shutdown() has closed already.
        self.thread.kill(SystemExit)


def _shut_listener(sock: socket.socket) -> None:
    """New connections are refused from now on; the port is free for the next server."""
    try:
        sock.shutdown(socket.SHUT_RDWR)  # Linux: the socket leaves LISTEN, the backlog is reset
    except OSError:
        pass


class _GeventServer:
    """gevent's server already logs accept errors and retries with backoff; the handler
    class comes from randstream.transport (request deadline, detached WebSockets).

    New connections go through Arrivals (arrivals.py): gevent's accept loop (`do_read`,
    its hook for subclasses) serves plain requests at once and leaves new sessions
    held; one task hands those (and requests that came late) to the server,
    ACCEPT_BATCH to a turn of the loop.
    """

    def __init__(self, app, sock, max_connections, waiting, handler, make_arrivals):
        import gevent
        from gevent.pool import Pool
        from gevent.pywsgi import WSGIServer

        feeding = []  # the task handing held sessions over, while it runs

        class Server(WSGIServer):
            def do_read(self):
                found = arrivals.next_plain()
                if len(arrivals) and not feeding:
                    feeding.append(gevent.spawn(feed))
                return found

        def feed() -> None:
            try:
                while len(arrivals) and self.server.started:
                    handed = 0
                    while handed < ACCEPT_BATCH and (found := arrivals.next()) is not None:
                        self.server.do_handle(*found)
                        handed += 1
                    # The ticker, the open connections and new plain requests go in between;
                    # requests still on their way are looked at again shortly.
                    gevent.sleep(0 if handed else RECHECK)
            finally:
                feeding.clear()

        self.server = Server(
            sock, app, log=None, error_log=logging.getLogger("gevent.pywsgi"),
            spawn=Pool(pool_size(max_connections, waiting)), handler_class=handler,
        )
        self.arrivals = arrivals = make_arrivals(partial(WSGIServer.do_read, self.server))

    def run(self) -> None:
        self.server.serve_forever()

    def stop_accepting(self) -> None:
        self.server.stop_accepting()
        _shut_listener(self.server.socket)
        self.arrivals.close()

    def stop(self) -> None:
        self.server.stop(timeout=2)


class _ThreadingServer:
    def __init__(self, app, sock):
        from werkzeug.serving import make_server

        host, port = sock.getsockname()[:2]
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.server = make_server(host, port, app, threaded=True, fd=sock.fileno(),
                                  request_handler=_werkzeug_handler())

    def run(self) -> None:
        self.server.serve_forever()

    def stop_accepting(self) -> None:
        pass  # werkzeug's loop ends in stop(); its threads are not told apart here

    def stop(self) -> None:
        self.server.shutdown()


def _werkzeug_handler():
    """Werkzeug's request handler, ending a connection with its WebSocket.

    simple-websocket ends a WebSocket by raising ConnectionError, which Werkzeug takes for a
    dropped connection: it then waited on it for a next request while the client waited for
    the server's FIN, until it gave up (Node's ws: 30 s; held forever by one that never does).
    """
    from werkzeug.serving import WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        websocket_ended = False

        def connection_dropped(self, error, environ=None):
            self.close_connection = True
            self.websocket_ended = environ is not None and \
                environ.get("HTTP_UPGRADE", "").lower() == "websocket"

        def finish(self):
            super().finish()  # our references to the socket go: the reader's close is the last
            if self.websocket_ended:
                # simple-websocket's reader sends its answer to a close frame after it wakes
                # this thread: the FIN (socketserver's shutdown next) must not overtake it.
                deadline = time.monotonic() + WEBSOCKET_LINGER
                while self.connection.fileno() != -1 and time.monotonic() < deadline:
                    time.sleep(0.01)

    return Handler


def fail(message: str) -> None:
    print(f"random_stream: error: {message}", file=sys.stderr)
    raise SystemExit(2)
