"""What a WSGI host's worker can serve, as its configuration tells it, and what the app does
with that: gunicorn.conf.py (randstream/gunicorn_conf.py) calls worker_ready() in each worker.

A host serves a fixed number of requests at once per worker: gunicorn's `--threads`, or
its gevent worker's `--worker-connections` greenlets. Engine.IO requests and event
streams are long-lived (a WebSocket under threads holds its thread for its whole life, a
long poll up to a ping interval): if they took every slot, the next client would wait in
the worker's queue with no answer at all. So they may take the slots less a reserve
(RESERVE_SHARE, at least MIN_RESERVE), which serves pages, the API and the refusals: past
that a new one gets 503 (stack.py's HostLimits). On gunicorn's gevent worker WebSockets
that open on WebSocket leave their slot after the handshake (transport/gunicorn.py).

Several worker processes on one port do not share Engine.IO sessions, and a polling
client's next request may reach another one: its handshake is refused with one clear
answer (400) and it can connect over WebSocket, which needs one connection only.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from .server import FD_RESERVE, LISTEN_BACKLOG
from .waiting import PLAIN_ANSWERS, WAITING_LIMIT

__all__ = ["LISTEN_BACKLOG", "Host", "Slots", "describe_worker", "master_starting",
           "settings_or_exit", "worker_connections", "worker_exiting", "worker_ready"]

log = logging.getLogger(__name__)

RESERVE_SHARE = 0.1  # of a worker's slots, kept for short requests (pages, API, refusals)
MIN_RESERVE = 2
# The gevent worker's greenlets beyond the sessions, as random_stream.py's own gevent
# server has them (server.pool_size): the connections waiting for a request, the plain
# answers in progress (stack.Answering: clients that stop reading may hold all 256), and
# a reserve, so that a client past --max-connections still gets the app's 503.
WAITING_SLOTS = WAITING_LIMIT + PLAIN_ANSWERS + FD_RESERVE
STOP_CHECK = 0.25  # seconds between looks at whether gunicorn is stopping the worker


@dataclass(frozen=True)
class Host:
    """A WSGI host worker, as its configuration describes it."""

    name: str  # e.g. "gunicorn gthread worker"
    slots: int | None  # requests one worker serves at once; None: unknown, no limit here
    workers: int = 1  # processes serving the same port
    unit: str = "threads"  # what a slot is, for the log and the refusal

    @property
    def long_lived(self) -> int | None:
        """Long-lived requests one worker takes at once: its slots less the reserve."""
        if self.slots is None:
            return None
        return max(0, self.slots - max(MIN_RESERVE, int(self.slots * RESERVE_SHARE)))


class Slots:
    """The long-lived requests a worker serves now, counted under a lock (threads)."""

    def __init__(self) -> None:
        self.host: Host | None = None  # set by worker_ready(); None: no limit
        self.busy = 0
        self._lock = threading.Lock()

    def take(self, new: bool) -> bool:
        """One more long-lived request; a `new` one (a handshake, an event stream) only
        while there is room. False: refused, nothing taken."""
        limit = self.host.long_lived if self.host is not None else None
        with self._lock:
            if new and limit is not None and self.busy >= limit:
                return False
            self.busy += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.busy -= 1


def settings_or_exit(environ=None):
    """The app's settings from RANDOM_STREAM_*, read where gunicorn.conf.py is (in gunicorn's
    master, before any worker): an invalid one is create_app()'s one line and exit status 2
    here, instead of in every worker, which gunicorn would start again, forever."""
    import sys

    from .config import ConfigError, load

    try:
        return load([], environ)
    except ConfigError as exc:
        print(f"random_stream: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def master_starting(server) -> None:
    """gunicorn's on_starting hook, in the master before it listens: refuses what cannot work.

    `--preload` makes the app in the master, before a gevent worker patches the standard
    library: the app takes threads for its async mode, and under the patched worker it
    answered nothing (health checks and clients timed out). One line and exit status 2.
    """
    import sys

    if server.cfg.preload_app and _is_gevent(server.cfg.worker_class):
        print("random_stream: error: gunicorn --preload with the gevent worker makes the app "
              "before gevent patches the standard library, and it would answer nothing: "
              "leave --preload out (each worker makes its own app)", file=sys.stderr)
        raise SystemExit(2)


def _is_gevent(worker_class) -> bool:
    return any(cls.__name__ == "GeventWorker" for cls in getattr(worker_class, "__mro__", ()))


def worker_connections(settings) -> int:
    """gunicorn's gevent worker's greenlets: every session of --max-connections and the
    room beside them (WAITING_SLOTS), as random_stream.py's own gevent server has them."""
    return settings.max_connections + WAITING_SLOTS


def describe_worker(worker) -> Host:
    """A gunicorn worker (the object its hooks get) as a Host, from its documented settings."""
    cfg = worker.cfg
    kinds = {cls.__name__ for cls in type(worker).__mro__}
    if "ThreadWorker" in kinds:
        return Host("gunicorn gthread worker", cfg.threads, cfg.workers, "threads")
    if "GeventWorker" in kinds:
        return Host("gunicorn gevent worker", cfg.worker_connections, cfg.workers,
                    "worker connections")
    if "SyncWorker" in kinds:
        return Host("gunicorn sync worker", 1, cfg.workers, "request at a time")
    return Host(f"gunicorn {type(worker).__name__}", None, cfg.workers)


def worker_ready(worker) -> None:
    """gunicorn's post_worker_init hook: tell the app what this worker serves at once."""
    stream = getattr(worker.wsgi, "extensions", {}).get("stream")
    if stream is None:
        log.warning("gunicorn.conf.py: the app is not random_stream's create_app(); "
                    "its host limits are not set")
        return
    host = describe_worker(worker)
    stream.slots.host = host
    # The worker is ready: full collections right after a broadcast from now on, as
    # random_stream.py's own server does (else a full one pauses the ticker at random),
    # and the stream starts now rather than with the first request: scaled out, the
    # worker hears the cluster's readings before its first client asks for them.
    stream.collections.start()
    stream.start()
    if hasattr(worker, "alive"):
        stream.socketio.start_background_task(stop_with, worker, stream)
    if host.slots is None:
        log.info("%s (pid %d): its capacity is unknown; no limit on long-lived requests "
                 "besides --max-connections", host.name, os.getpid())
        return
    log.info("%s (pid %d, %d worker(s)): %d %s; WebSocket, polling and event-stream "
             "requests take at most %d at once, past that a new one gets 503%s",
             host.name, os.getpid(), host.workers, host.slots, host.unit, host.long_lived,
             "; polling handshakes get 400 (several workers)" if host.workers > 1 else "")


def stop_with(worker, stream) -> None:
    """Stop the stream as soon as gunicorn stops the worker.

    gunicorn stops a worker gracefully (SIGTERM, a reload, --max-requests) by clearing
    `worker.alive`, then waits up to --graceful-timeout (30 s) for its requests to end, and
    no hook runs before it has. A WebSocket or a long poll never ends by itself: its client
    saw nothing for 30 s (threads) or lost its connection without a close packet (gevent,
    where gunicorn no longer counts handed-over WebSockets), and the lease stayed taken
    until it expired. So the worker is watched, and stops as random_stream.py's own server
    stops (server.serve): the ticker and its lease, then every client with a close packet;
    they reconnect to another worker at once, and gunicorn's wait ends with them.
    """
    while worker.alive:
        stream.socketio.sleep(STOP_CHECK)
    stream.stop_serving()


def worker_exiting(server, worker) -> None:
    """gunicorn's worker_exit hook, in the worker after it stopped serving (also after a
    SIGINT/SIGQUIT, which gives no graceful time): the same stop if it has not happened,
    then the store is closed."""
    stream = getattr(worker.wsgi, "extensions", {}).get("stream")
    if stream is None:
        return
    stream.stop_serving()
    stream.close()

