"""Fixtures: an app for in-process tests, and real server processes on free ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import socketio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from random_stream import create_app  # noqa: E402
from randstream.config import Settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict | str]:
    """Status and body (JSON decoded when it is JSON) of a GET, 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, raw, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers.get_content_type()
    text = raw.decode()
    return status, json.loads(text) if kind == "application/json" else text


def fill_database(path: Path, count: int) -> Path:
    """A database of `count` readings, drawn and stored by the server's own ticker, here.

    For tests that need a long history before they start: a server at --interval 0.01
    takes count / 100 seconds for it, this a fraction of a second (the same rows and
    stats, only the timestamps are closer together).
    """
    app = create_app(Settings(db=str(path), async_mode="threading", interval=1.0, history=50))
    stream = app.extensions["stream"]
    try:
        for _ in range(count):
            stream.ticker.tick()
    finally:
        stream.close()
    return path


def swap_database(replacement: Path, path: Path) -> None:
    """Put another database where a stopped server's was (a restore, a bad deploy): its
    files, WAL included, replace the old ones."""
    for suffix in ("", "-wal", "-shm"):
        old, new = Path(f"{path}{suffix}"), Path(f"{replacement}{suffix}")
        if new.exists():
            new.replace(old)
        elif old.exists():
            old.unlink()


class ServerProcess:
    """`python random_stream.py` on 127.0.0.1 and a free port, as a user would run it."""

    def __init__(self, args: tuple[str, ...], db: str | None, log_path: Path, env: dict | None):
        self.args = list(args)
        self.db = db
        self.port = free_port()
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.preexec_fn = None  # e.g. a lower RLIMIT_NOFILE for this server only
        self.launcher = [str(ROOT / "random_stream.py")]  # or tests/moved_internal.py SIMULATION

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        db = ["--db", self.db] if self.db is not None else []
        return [sys.executable, *self.launcher, "--host", "127.0.0.1",
                "--port", str(self.port), *db, *self.args]

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start (or start again, same port and db) and wait until it answers HTTP."""
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=self.preexec_fn,
            )
        return self.wait_until_answering(timeout)

    def wait_until_answering(self, timeout: float) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                http_get(self.url + "/healthz", timeout=1)
                return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not answer within {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def get(self, path: str) -> tuple[int, dict | str]:
        return http_get(self.url + path)


def pytest_addoption(parser):
    parser.addoption(
        "--fast-path", choices=("auto", "off"), default="auto",
        help="the servers' and apps' --fast-path: off runs the suite on the libraries' own path",
    )
    parser.addoption(
        "--async-mode", choices=("eventlet", "gevent", "threading"), default=None,
        help="the servers' async mode where a test does not choose one (default: eventlet)",
    )


def pytest_configure(config):
    # Beside pyproject.toml's markers: tests/run's second and third passes leave these out.
    config.addinivalue_line(
        "markers", "page_only: the page's own behaviour, the same on every server path")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--fast-path") == "off":
        skip = pytest.mark.skip(reason="tests the fast path itself (randstream/transport)")
        for item in items:
            if "fast_path" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def fast_path(request) -> str:
    return request.config.getoption("--fast-path")


@pytest.fixture
def server_factory(tmp_path, fast_path, request):
    """Start real servers: server_factory("--interval", "0.2", db=path or None)."""
    started: list[ServerProcess] = []
    mode = request.config.getoption("--async-mode")
    defaults = {"RANDOM_STREAM_FAST_PATH": fast_path}
    if mode is not None:  # an --async-mode argument of the test still wins
        defaults["RANDOM_STREAM_ASYNC_MODE"] = mode

    def start(*args: str, db: str | None = ":memory:", env: dict | None = None,
              launch: bool = True, launcher: list[str] | None = None) -> ServerProcess:
        env = {**defaults, **(env or {})}
        server = ServerProcess(args, db, tmp_path / f"server-{len(started)}.log", env)
        if launcher is not None:
            server.launcher = launcher
        started.append(server)
        return server.start() if launch else server

    yield start
    for server in started:
        server.kill()


class Viewer:
    """A python-socketio client over WebSocket that records what it receives."""

    def __init__(self, url: str):
        self.client = socketio.Client(reconnection=False)
        self.histories: list[dict] = []
        self.numbers: list[dict] = []
        self.errors: list[dict] = []
        self.changed = threading.Condition()
        for name, bucket in (("history", self.histories), ("random_number", self.numbers),
                             ("error", self.errors)):
            self.client.on(name, self._recorder(bucket))
        self.client.connect(url, transports=["websocket"], wait_timeout=10)

    def _recorder(self, bucket):
        def record(data):
            with self.changed:
                bucket.append(data)
                self.changed.notify_all()
        return record

    def wait_for(self, predicate, timeout: float = 20.0) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), "timed out waiting"

    def readings(self) -> list[tuple[int, int]]:
        with self.changed:
            return [(r["seq"], r["value"]) for r in self.numbers]

    def last_seq(self) -> int:
        with self.changed:
            return self.numbers[-1]["seq"] if self.numbers else 0

    def close(self) -> None:
        self.client.disconnect()


@pytest.fixture
def viewers():
    """Open Viewers on servers; each is closed at the end of the test."""
    opened: list[Viewer] = []

    def open_viewer(url: str) -> Viewer:
        opened.append(Viewer(url))
        return opened[-1]

    yield open_viewer
    for viewer in opened:
        viewer.close()


@pytest.fixture
def settings(fast_path) -> Settings:
    return Settings(db=":memory:", async_mode="threading", interval=0.1, history=50,
                    fast_path=fast_path)


@pytest.fixture
def app(settings):
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["stream"].close()


@pytest.fixture
def stream(app):
    return app.extensions["stream"]


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def socket_client(app, client):
    socketio = app.extensions["socketio"]
    return socketio.test_client(app, flask_test_client=client)


DIRECT_RUNTIMES = ("eventlet", "gevent")  # async modes with a direct WebSocket path


def in_async_mode(server_factory, mode: str):
    """server_factory, its servers in `mode` (the test's own env on top)."""
    def start(*args, env: dict | None = None, **kwargs):
        return server_factory(*args, env={"RANDOM_STREAM_ASYNC_MODE": mode, **(env or {})}, **kwargs)

    start.mode = mode
    return start


# ---- the browser (tests/test_browser*.py) ----------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _need_browser(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (browser tests must run in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, once per session: Playwright's sync API runs one at a time."""
    if not CHROMIUM.exists():
        _need_browser(f"{CHROMIUM} is missing: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need_browser("playwright is not installed: pip install -r tests/requirements.txt")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
