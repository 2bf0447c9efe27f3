"""Every use of a library internal, in one package: chosen and checked once, at start.

The fast path (one frame for every client, WebSockets without tasks, one pinger) needs
internals of python-engineio, python-socketio and eventlet. At start each of them is
checked (engineio_checks.py, and EXTENSION_POINTS in eventlet.py and gevent.py), and the
library versions against the tested ranges (pyproject.toml). If one is missing or different,
one WARNING names it and the server takes the libraries' own documented path instead:
python-socketio's Manager, engine.io's per-client queues, tasks and pings.
Slower, but every part of the contract holds. `--fast-path off` forces that path.

The limits on connections and messages (hooks.py) need internals of engine.io on either
path (the required ones in engineio_checks.py); without them the start is refused with
one line naming what is missing.

Runtimes: RUNTIMES maps an async mode to its module (eventlet.py, gevent.py, both on the
runtime-neutral websocket.py), each with the same names: EXTENSION_POINTS,
opens_on_websocket, adopt, Connection, http_protocol, parser_problems, body_problems;
gevent.py also has websocket_driver (its own handshake, as eventlet's WebSocket driver
already does) and upgrade_marker (engine.io's driver tells the handler when the connection
became a WebSocket).
"""

from __future__ import annotations

import importlib
import logging
import re
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

from .. import paths
from ..config import ConfigError
from . import engineio as engineio_adapter
from . import engineio_checks, screen
from .points import ExtensionPoint

log = logging.getLogger(__name__)

RUNTIMES = {"eventlet": "eventlet", "gevent": "gevent"}  # async mode -> module with its direct path
LIBRARIES = ("python-engineio", "python-socketio", "eventlet")  # whose internals are used
PYPROJECT = Path(__file__).resolve().parent.parent.parent / "pyproject.toml"  # a checkout's
DISTRIBUTION = "random-stream"  # an installed app's


class UnsupportedLibrary(ConfigError):
    """An internal the limits (hooks.py) need has moved: no correct way to serve."""


class Sends(NamedTuple):
    """The client manager's broadcast counters (all 0 on the libraries' own path)."""

    direct: int  # frames written straight to a client's connection
    queued: int  # packets that went through engine.io's queue
    laggards_dropped: int  # clients cut off for being too far behind


class Transport:
    """Which path serves, and the few operations the rest of the code asks of it."""

    def __init__(self, async_mode: str, fast_path: str = "auto", wsgi_host: bool = False) -> None:
        self.async_mode = async_mode
        self.wsgi_host = wsgi_host
        required, fast_points = engineio_checks.extension_points(async_mode)
        for point in required:
            problem = point.problem()
            if problem is not None:
                raise UnsupportedLibrary(
                    f"{point.name}: {problem}; it is needed so that {point.purpose} "
                    f"(tested with {tested_ranges_text()})"
                )
        runtime_name = RUNTIMES.get(async_mode)
        runtime = importlib.import_module(f".{runtime_name}", __name__) if runtime_name else None
        points = list(fast_points)
        if runtime is not None:
            points += runtime.EXTENSION_POINTS
        self.problems: list[str] = []
        if fast_path == "auto":
            self.problems = version_problems(async_mode) + [
                f"{p.name} ({problem})" for p in points if (problem := p.problem()) is not None
            ]
        self.fast = fast_path == "auto" and not self.problems
        self.runtime = runtime if self.fast else None
        self.fast_path = fast_path
        # The runtime's HTTP protocol (request and body deadlines, refusals) serves on either
        # path, under random_stream.py's own server only: a WSGI host reads requests itself.
        self.server_runtime = runtime
        serves_http = runtime is not None and not wsgi_host
        self.parser_problems = runtime.parser_problems() if serves_http else []
        self.body_problems = runtime.body_problems() if serves_http else []
        self.accept_problems = [f"{p.name} ({problem})" for p in getattr(runtime, "ACCEPT_POINTS", ())
                                if serves_http and (problem := p.problem()) is not None]
        self.manager = None  # python-socketio's client manager, once client_manager() made it
        # Under a WSGI host, the direct path needs the host to hand a WebSocket's connection
        # over: gunicorn's gevent worker can (gunicorn.py), with this WSGI layer.
        self.hand_over = None
        self.host_problems: list[str] = []
        if wsgi_host and self.runtime is not None and async_mode == "gevent":
            from . import gunicorn

            if gunicorn.gevent_worker_loaded():
                self.host_problems = [f"{p.name} ({problem})" for p in gunicorn.EXTENSION_POINTS
                                      if (problem := p.problem()) is not None]
                if not self.host_problems:
                    self.hand_over = gunicorn.HandOver

    def log_choice(self) -> None:
        """One WARNING if a check failed, and one INFO line saying which path serves."""
        if self.problems:
            log.warning("fast path off: %s; serving through the libraries' own path",
                        "; ".join(self.problems))
        if self.host_problems:
            log.warning("no direct WebSocket path under gunicorn: %s; its WebSocket clients "
                        "take engine.io's own driver", "; ".join(self.host_problems))
        if self.parser_problems:
            # eventlet: its bare 414/431 refusals; gevent: its answer after an upgrade's end
            log.warning("%s's own HTTP answers where its internals moved: %s",
                        self.async_mode, "; ".join(self.parser_problems))
        if self.body_problems:
            log.warning("request bodies have no deadline (a slow one holds its connection): %s",
                        "; ".join(self.body_problems))
        if self.accept_problems:
            log.warning("new connections are served in arrival order: %s",
                        "; ".join(self.accept_problems))
        log.info("transport: %s", self.describe())

    def describe(self) -> str:
        if not self.fast:
            why = "--fast-path off" if self.fast_path == "off" else "a check failed"
            return f"the libraries' own path ({why}): python-socketio's manager, engine.io's queues and pings"
        if self.runtime is None:
            return f"fast path: one pinger, snapshots encoded once; no direct WebSocket under {self.async_mode}"
        if self.wsgi_host and self.hand_over is None:
            return ("fast path: one pinger, snapshots encoded once; WebSocket clients on "
                    "engine.io's own driver (this host does not hand connections over)")
        host = " on gunicorn's gevent worker" if self.hand_over is not None else ""
        return f"fast path: direct WebSocket fan-out under {self.async_mode}{host}, one pinger"

    # Built into the app ----------------------------------------------------------------

    def client_manager(self):
        """python-socketio's client manager, this process's own: the fast one, or the
        library's. (Scaled out, readings reach each process through its subscription to
        Redis, not through a Socket.IO message queue.)"""
        if self.fast:
            self.manager = engineio_adapter.FastManager(self.runtime)
        else:
            import socketio

            self.manager = socketio.Manager()
        return self.manager

    def install(self, socketio, hooks) -> None:
        """Wire this server once: the hooks (hooks.py), the fast connect hook in front of
        them, the WebSocket driver's wrappers."""
        eio = socketio.server.eio
        hooks.install()
        wrappers = []  # innermost first
        marker = getattr(self.server_runtime, "upgrade_marker", None)
        if marker is not None:  # gevent, either path: no HTTP after an upgraded WebSocket
            wrappers.append(marker)
        if self.runtime is not None:
            driver = getattr(self.runtime, "websocket_driver", None)
            if driver is not None:  # gevent: the handshake of adopted sockets is ours
                wrappers.append(driver)
            # The direct path writes uncompressed frames and refuses compressed ones.
            wrappers.append(engineio_adapter.uncompressed)
        wrappers.append(screen.screened(hooks.screen_frame, eio.max_http_buffer_size))
        engineio_adapter.wrap_websocket_driver(eio, *wrappers)
        if self.fast:
            manager = socketio.server.manager
            engineio_adapter.chain_handler(eio, "connect", manager.engine_connected)

    def http_protocol(self, waiting, request_timeout: float, send_timeout: float | None = None):
        """The HTTP protocol class (eventlet) or handler class (gevent) for the runtime's
        server: a request deadline (and eventlet's refusals) on either path; the detached
        WebSocket on the fast path only. (eventlet's server applies `send_timeout` itself.)"""
        if self.async_mode == "gevent":
            return self.server_runtime.http_protocol(waiting, request_timeout, detach=self.fast,
                                                     send_timeout=send_timeout)
        return self.server_runtime.http_protocol(waiting, request_timeout, detach=self.fast)

    def accept_nowait(self):
        """eventlet's accept that never waits, for arrivals.py; None elsewhere (gevent's
        server has its own, threading none) or if its extension point moved."""
        if self.async_mode != "eventlet" or self.accept_problems:
            return None
        return self.server_runtime.accept_nowait

    # Asked while serving ------------------------------------------------------------------

    def sends(self) -> Sends:
        """How the broadcasts went out so far (for /metrics)."""
        manager = self.manager
        return Sends(getattr(manager, "fast_sends", 0), getattr(manager, "slow_sends", 0),
                     getattr(manager, "laggards_dropped", 0))

    def prepare_event(self, socketio, event: str, data):
        """An event to send to many clients one at a time: encoded once on the fast path."""
        if not self.fast:
            return (event, data)
        from engineio import packet as eio_packet
        from socketio import packet as sio_packet

        encoded = socketio.server.packet_class(
            sio_packet.EVENT, namespace="/", data=[event, data]).encode()
        return engineio_adapter.Prepared(eio_packet.Packet(eio_packet.MESSAGE, encoded))

    def send_prepared(self, socketio, sid: str, prepared) -> None:
        """Send what prepare_event made to one client of the default namespace."""
        if not self.fast:
            event, data = prepared
            socketio.emit(event, data, to=sid)
            return
        eio_sid = socketio.server.manager.eio_sid_from_sid(sid, "/")
        engineio_adapter.send_prepared(socketio.server, eio_sid, prepared)

    def queued_packets(self, socketio, sid: str) -> int:
        """Packets waiting for one client of the default namespace."""
        eio_sid = socketio.server.manager.eio_sid_from_sid(sid, "/")
        return engineio_adapter.queued_packets(socketio.server.eio, eio_sid)


# Versions -------------------------------------------------------------------------------

def tested_ranges() -> dict[str, str]:
    """The declared ranges of LIBRARIES: the installed distribution's requirements, or in a
    checkout pyproject.toml's ({} if neither is there)."""
    ranges = {}
    for line in _declared_requirements():  # "name>=low,<high",  (no tomllib before 3.11)
        match = re.match(r'\s*"([A-Za-z0-9_.-]+)\s*([<>=!~][^#;"]*)"', line)
        if match and match[1].lower() in LIBRARIES:
            ranges[match[1].lower()] = match[2].replace(" ", "")
    return ranges


def _declared_requirements() -> list[str]:
    if paths.INSTALLED:  # no pyproject.toml in site-packages: the wheel's metadata has them
        try:
            return [f'"{requirement}"' for requirement in metadata.requires(DISTRIBUTION) or ()]
        except metadata.PackageNotFoundError:
            return []
    try:
        return PYPROJECT.read_text().splitlines()
    except OSError:
        return []


def tested_ranges_text() -> str:
    return ", ".join(f"{name}{spec}" for name, spec in tested_ranges().items()) or "its requirements"


def version_problems(async_mode: str) -> list[str]:
    """One entry per used library whose installed version is outside its tested range."""
    found = []
    for name, spec in tested_ranges().items():
        if name == "eventlet" and async_mode != "eventlet":
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # vendored or absent: the attribute checks decide
        if not in_range(installed, spec):
            found.append(f"{name} {installed} is outside the tested range {spec}")
    return found


def in_range(version: str, spec: str) -> bool:
    """Whether `version` satisfies a comma-separated spec of >=, >, <=, <, ==, != clauses."""
    have = _release(version)
    for clause in filter(None, spec.split(",")):
        op, want = re.match(r"(>=|<=|==|!=|~=|>|<)(.*)", clause).groups()
        want_t = _release(want)
        width = max(len(have), len(want_t))
        a, b = have + (0,) * (width - len(have)), want_t + (0,) * (width - len(want_t))
        ok = {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b, "==": a == b, "!=": a != b,
              "~=": a >= b and have[:len(want_t) - 1] == want_t[:-1]}[op]
        if not ok:
            return False
    return True


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(p) for p in match[0].split(".")) if match else (0,)


__all__ = ["ExtensionPoint", "Sends", "Transport", "UnsupportedLibrary", "in_range",
           "tested_ranges"]
