"""Flask's own hosts: `flask run` (also with the reloader) and gunicorn, real processes, real clients.

Under them nothing calls main(): create_app() reads RANDOM_STREAM_*, takes the host's async
mode (threads) and starts the ticker with the first request, once per serving process.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import socketio
from conftest import ROOT, free_port, http_get
from rawsocket import CLOSED, RawSocket

from random_stream import create_app

ENV = {"RANDOM_STREAM_INTERVAL": "0.1", "RANDOM_STREAM_DB": ":memory:", "PYTHONUNBUFFERED": "1"}


class Host:
    """A command that serves the app on 127.0.0.1:port, in its own process group."""

    def __init__(self, command: list[str], port: int, log_path: Path, env: dict) -> None:
        self.port, self.log_path = port, log_path
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RANDOM_STREAM_")}
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,  # the reloader's child too
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_until_answering(self, timeout: float = 30.0) -> Host:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.log()}")
            try:
                http_get(self.url + "/healthz", timeout=1)
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"no answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def host(tmp_path):
    started: list[Host] = []

    def start(*command: str, port: int, env: dict | None = None) -> Host:
        started.append(Host(list(command), port, tmp_path / f"host-{len(started)}.log", {**ENV, **(env or {})}))
        return started[-1]

    yield start
    for h in started:
        h.stop()


class Reader:
    """A python-socketio client on one transport, recording the readings it receives."""

    def __init__(self, url: str, transport: str) -> None:
        self.numbers: list[dict] = []
        self.histories: list[dict] = []
        self.changed = threading.Condition()
        self.client = socketio.Client(reconnection=False)
        self.client.on("random_number", lambda data: self._record(self.numbers, data))
        self.client.on("history", lambda data: self._record(self.histories, data))
        self.client.connect(url, transports=[transport], wait_timeout=10)

    def _record(self, bucket: list, data: dict) -> None:
        with self.changed:
            bucket.append(data)
            self.changed.notify_all()

    def consecutive(self, count: int, timeout: float = 30.0) -> list[int]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.numbers) >= count, timeout), self.numbers
            return [r["seq"] for r in self.numbers]

    def close(self) -> None:
        self.client.disconnect()


def assert_live(h: Host) -> None:
    """WebSocket and polling clients both see seq move by exactly 1; one ticker in the process tree."""
    readers = [Reader(h.url, "websocket"), Reader(h.url, "polling")]
    try:
        for reader in readers:
            seqs = reader.consecutive(8)
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
            assert reader.histories, "no history snapshot on connect"
    finally:
        for reader in readers:
            reader.close()
    status, health = http_get(h.url + "/healthz")
    assert status == 200, health
    status, page = http_get(h.url + "/")
    assert status == 200 and 'id="current-value"' in page
    assert h.log().count("ticker started") == 1, h.log()


def flask_run(*extra: str, port: int) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "random_stream", "run",
            "--host", "127.0.0.1", "--port", str(port), *extra]


def test_flask_run_streams_with_one_ticker(host):
    port = free_port()
    h = host(*flask_run(port=port), port=port).wait_until_answering()
    assert_live(h)
    assert "async mode threading" in h.log()


def test_flask_run_debug_ticks_only_in_the_reloaders_child(host):
    port = free_port()
    h = host(*flask_run("--debug", port=port), port=port).wait_until_answering()
    assert "Restarting with" in h.log() or "reloader" in h.log(), h.log()
    assert_live(h)


@pytest.mark.parametrize("worker, mode", [
    (("--threads", "50"), "threading"),  # simple-websocket on gunicorn's own socket
    (("--worker-class", "gevent"), "gevent"),
])
def test_gunicorn_streams_with_one_ticker(host, worker, mode):
    pytest.importorskip("gunicorn")
    if mode == "gevent":
        pytest.importorskip("gevent")
    port = free_port()
    h = host(sys.executable, "-m", "gunicorn", "--workers", "1", *worker,
             "--bind", f"127.0.0.1:{port}", "random_stream:create_app()", port=port)
    assert_live(h.wait_until_answering())
    assert f"async mode {mode}" in h.log()


def handshakes_at_once(port: int, count: int, timeout: float = 30.0) -> list[str]:
    """`count` WebSocket handshakes sent at the same moment on their own connections: each
    one's status line, or "silence" if none came within `timeout`. The connections stay
    open until every answer is in (a WebSocket holds its thread meanwhile)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=timeout) for _ in range(count)]
    answers = ["silence"] * count
    barrier = threading.Barrier(count)

    def one(i: int) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        barrier.wait()
        try:
            socks[i].sendall(request)
            head = socks[i].recv(4096)
            answers[i] = head.split(b"\r\n", 1)[0].decode() if head else "closed"
        except TimeoutError:
            pass
        except OSError as exc:
            answers[i] = f"error {exc!r}"

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    for s in socks:
        s.close()
    return answers


def test_gunicorn_threads_answers_every_first_connection_at_once(host):
    """The first connections of each worker race python-socketio's lazy manager set-up on
    several threads (they got HTTP 500: FastManager had no pinger yet), and past the
    threads a client waited with no answer: now each gets its WebSocket or a 503."""
    pytest.importorskip("gunicorn")
    port = free_port()
    h = host(sys.executable, "-m", "gunicorn", "--workers", "4", "--threads", "25",
             "--bind", f"127.0.0.1:{port}", "random_stream:create_app()", port=port,
             env={"RANDOM_STREAM_MAX_PER_ADDRESS": "10000"})
    h.wait_until_answering()
    answers = handshakes_at_once(port, 150)
    statuses = {answer: answers.count(answer) for answer in answers}
    assert set(statuses) <= {"HTTP/1.1 101 Switching Protocols",
                             "HTTP/1.1 503 Service Unavailable"}, statuses
    assert statuses.get("HTTP/1.1 503 Service Unavailable", 0) >= 150 - 4 * 23, statuses
    assert "Traceback" not in h.log() and "Error handling request" not in h.log(), h.log()


def sends(h: Host) -> dict[str, float]:
    """/metrics' broadcast sends by path (direct, queued)."""
    _, text = http_get(h.url + "/metrics")
    found = {}
    for line in text.splitlines():
        if line.startswith("random_stream_broadcast_sends_total{"):
            found[line.split('path="')[1].split('"')[0]] = float(line.split()[1])
    return found


def worker_connections_on(h: Host, port: int) -> list[int]:
    """Descriptors of each gunicorn worker that are connections to `port` (a dup() counts)."""
    import psutil

    workers = psutil.Process(h.proc.pid).children()
    return [sum(1 for c in w.net_connections("tcp") if c.laddr and c.laddr.port == port
                and c.status == "ESTABLISHED") for w in workers]


def test_gunicorns_gevent_worker_hands_websockets_to_the_direct_path(host):
    """Under gunicorn -k gevent a client that opens on WebSocket is written to directly,
    one descriptor and no task of its own; before, the start-up line said so, but engine.io's
    own driver served it (a reader and a writer task, each reading through its queue)."""
    pytest.importorskip("gunicorn")
    pytest.importorskip("gevent")
    from test_fanout import raw_client, readings

    port = free_port()
    h = host(sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gevent",
             "--bind", f"127.0.0.1:{port}", "random_stream:create_app()", port=port)
    h.wait_until_answering()
    clients = [raw_client(h.url) for _ in range(10)]
    try:
        for ws in clients:
            seqs = readings(ws, 3)
            assert seqs == list(range(seqs[0], seqs[0] + 3)), seqs
        assert worker_connections_on(h, port) == [10]
        counts = sends(h)
        assert counts["direct"] >= 30 and counts["queued"] == 0, counts
    finally:
        for ws in clients:
            ws.close()
    assert "direct WebSocket fan-out under gevent on gunicorn's gevent worker" in h.log()


def test_a_bad_variable_stops_flask_run_with_the_flags_message(host):
    port = free_port()
    h = host(*flask_run(port=port), port=port, env={"RANDOM_STREAM_INTERVAL": "0"})
    assert h.proc.wait(30) == 2
    lines = h.log().strip().splitlines()
    assert lines == ["random_stream: error: --interval must be between 0.01 and 3600 seconds (got 0.0)"]


def test_create_app_reads_the_environment(monkeypatch, tmp_path):
    for name, value in {"INTERVAL": "0.25", "MIN": "5", "MAX": "9", "HISTORY": "40",
                        "DB": str(tmp_path / "env.sqlite3"), "PING_INTERVAL": "7"}.items():
        monkeypatch.setenv("RANDOM_STREAM_" + name, value)
    monkeypatch.delenv("RANDOM_STREAM_ASYNC_MODE", raising=False)
    app = create_app()
    stream = app.extensions["stream"]
    try:
        s = stream.settings
        assert (s.interval, s.min, s.max, s.history, s.ping_interval) == (0.25, 5, 9, 40, 7.0)
        assert s.async_mode == "threading"  # nothing monkey-patched this process: threads
        assert (tmp_path / "env.sqlite3").exists()
        assert stream.started_at is None, "no ticker before the first request"
    finally:
        stream.close()


@pytest.mark.parametrize("name, value", [
    ("RANDOM_STREAM_INTERVAL", "0"),
    ("RANDOM_STREAM_PORT", "eighty"),
    ("RANDOM_STREAM_MIN", "101"),  # above the default max
    ("RANDOM_STREAM_ASYNC_MODE", "asyncio"),
    ("RANDOM_STREAM_MESSAGE_QUEUE", "http://nope"),
])
def test_a_bad_variable_fails_create_app_as_it_fails_the_cli(monkeypatch, capsys, name, value):
    cli = subprocess.run(
        [sys.executable, str(ROOT / "random_stream.py")], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "RANDOM_STREAM_DB": ":memory:", "RANDOM_STREAM_PORT": "0", name: value},
        timeout=60,
    )
    assert cli.returncode == 2
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        create_app()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == cli.stderr
    assert cli.stderr.startswith("random_stream: error: ") and cli.stderr.count("\n") == 1


def gunicorn(*options: str, port: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", *options, "--bind", f"127.0.0.1:{port}",
            "random_stream:create_app()"]


def test_past_max_connections_gunicorns_gevent_worker_answers_503(host):
    """The README's command with RANDOM_STREAM_MAX_CONNECTIONS: the sessions past it get a
    503 each, none waits unanswered (gunicorn.conf.py gives the worker room to say so)."""
    pytest.importorskip("gevent")
    port = free_port()
    h = host(*gunicorn("-w", "1", "-k", "gevent", port=port), port=port,
             env={"RANDOM_STREAM_MAX_CONNECTIONS": "20"})
    h.wait_until_answering()
    answers = handshakes_at_once(port, 30)
    statuses = {answer: answers.count(answer) for answer in answers}
    assert statuses == {"HTTP/1.1 101 Switching Protocols": 20,
                        "HTTP/1.1 503 Service Unavailable": 10}, statuses


def test_gunicorns_gevent_worker_has_the_room_of_random_streams_own_pool():
    """gunicorn.conf.py's worker_connections: every session and the room beside them that
    random_stream.py's own gevent pool has (waiting connections, the 256 plain answers in
    progress, the reserve), so stalled answers cannot take the room of the app's 503."""
    from randstream import hosting, server
    from randstream.waiting import WAITING_LIMIT, Waiting

    settings = hosting.settings_or_exit({})
    assert hosting.worker_connections(settings) == server.pool_size(
        settings.max_connections, Waiting(WAITING_LIMIT))


@pytest.fixture
def redis_url(tmp_path):
    """A redis-server of this test's own (tests/test_scaleout.py's RedisServer)."""
    pytest.importorskip("redis")
    from test_scaleout import RedisServer  # skips when redis-server is not installed

    server = RedisServer(tmp_path / "redis.log").start()
    yield server.url
    server.kill()


class Follower:
    """A WebSocket client that keeps every reading it saw, as the dashboard does
    (static/js/sync.js): when a seq jumps ahead it asks for the missing ones (`resume`);
    when its connection ends it connects again saying what it holds (CONNECT auth)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: dict[int, int] = {}  # seq -> value
        self.stream: str | None = None
        self.connects = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.raw = self._connect()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _connect(self) -> RawSocket:
        deadline = time.monotonic() + 30
        while True:
            try:
                raw = RawSocket(self.url)
                break
            except Exception:  # the worker it reached is gone: another try reaches another
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        auth = {"after": max(self.seen), "stream": self.stream} if self.seen else None
        raw.send("40" + (json.dumps(auth) if auth else ""))
        self._merge(raw.wait_event("history"))
        self.connects += 1
        return raw

    def _merge(self, history: dict) -> None:
        self.stream = history["stream"]["id"]
        for reading in history["readings"]:
            self.seen[reading["seq"]] = reading["value"]

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                got = self.raw.recv(0.5)
                if got is CLOSED:
                    self.raw = self._connect()
                elif got is not None and got.startswith("42"):
                    name, data = self.raw.events.pop()
                    if name == "history":
                        self._merge(data)
                    elif name == "random_number":
                        last = max(self.seen, default=None)
                        self.seen[data["seq"]] = data["value"]
                        if last is not None and data["seq"] > last + 1:
                            self.raw.send('42["resume",' + json.dumps({"after": last}) + "]")
        except BaseException as exc:
            self.error = exc

    def wait_for(self, seq: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while max(self.seen, default=-1) < seq:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, (seq, max(self.seen, default=None))
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.raw.close()


def assert_one_gap_free_stream(followers: list[Follower]) -> None:
    """Each follower saw every seq from its first to its last, and all saw the same values."""
    values: dict[int, int] = {}
    for f in followers:
        seqs = sorted(f.seen)
        missing = set(range(seqs[0], seqs[-1] + 1)) - set(seqs)
        assert not missing, f"gaps {sorted(missing)[:10]} after {f.connects} connect(s)"
        for seq, value in f.seen.items():
            assert values.setdefault(seq, value) == value, (seq, value, values[seq])
    assert len({f.stream for f in followers}) == 1


def newest(followers: list[Follower]) -> int:
    return max(max(f.seen, default=0) for f in followers)


@pytest.mark.redis
def test_two_gunicorn_workers_share_one_stream_and_refuse_polling_clearly(host, redis_url):
    """gunicorn -w 2 --reuse-port with --message-queue: the kernel spreads the clients over
    both workers, every one sees the same gap-free stream, and a polling client (whose next
    request could reach the other worker) gets one clear 400."""
    pytest.importorskip("gevent")
    port = free_port()
    h = host(*gunicorn("-w", "2", "-k", "gevent", "--reuse-port", port=port), port=port,
             env={"RANDOM_STREAM_MESSAGE_QUEUE": redis_url, "RANDOM_STREAM_DB": ""})
    h.wait_until_answering()
    followers = [Follower(h.url) for _ in range(24)]
    try:
        target = newest(followers) + 20
        for f in followers:
            f.wait_for(target)
        spread = worker_connections_on(h, port)
        assert len(spread) == 2 and min(spread) > 0 and sum(spread) == 24, spread
    finally:
        for f in followers:
            f.close()
    assert_one_gap_free_stream(followers)
    status, body = http_get(h.url + "/socket.io/?EIO=4&transport=polling")
    assert status == 400 and "WebSocket" in body["error"], (status, body)
    with pytest.raises(socketio.exceptions.ConnectionError):
        Reader(h.url, "polling")
    assert h.log().count("ticker started") == 2, h.log()  # one a worker; one of them leads
    assert h.log().count("leading: this process holds the lease") == 1, h.log()


@pytest.mark.redis
def test_a_killed_lease_holding_worker_is_replaced_and_its_clients_resume_gap_free(
        host, redis_url):
    """kill -9 the worker that ticks: gunicorn starts another, the other worker takes the
    lease and ticks on, and the killed worker's clients connect again and miss nothing."""
    pytest.importorskip("gevent")
    port = free_port()
    h = host(*gunicorn("-w", "2", "-k", "gevent", "--reuse-port", port=port), port=port,
             env={"RANDOM_STREAM_MESSAGE_QUEUE": redis_url, "RANDOM_STREAM_DB": ""})
    h.wait_until_answering()
    followers = [Follower(h.url) for _ in range(24)]
    try:
        start = newest(followers)
        for f in followers:
            f.wait_for(start + 5)
        assert min(worker_connections_on(h, port)) > 0
        leading = re.findall(r"\[(\d+)\] INFO randstream.scaleout: leading", h.log())
        assert leading, h.log()
        killed, before = leading[-1], len(h.log())  # the lease may have changed hands: the last
        os.kill(int(killed), signal.SIGKILL)
        killed_at = newest(followers)
        for f in followers:
            f.wait_for(killed_at + 30)
    finally:
        for f in followers:
            f.close()
    assert_one_gap_free_stream(followers)
    assert sum(f.connects > 1 for f in followers) > 0, "nobody was on the killed worker"
    log = h.log()
    after = re.findall(r"\[(\d+)\] INFO randstream.scaleout: leading", log[before:])
    assert after and killed not in after, log  # another worker ticks on
    assert f"Worker (pid:{killed}) was sent SIGKILL" in log and log.count("Booting worker") == 3, log


@pytest.mark.redis
@pytest.mark.parametrize("worker", [("-k", "gevent"), ("--threads", "20")], ids=["gevent", "threads"])
def test_a_stopping_gunicorn_worker_closes_its_clients_and_gives_up_the_lease(
        host, redis_url, worker):
    """gunicorn's graceful stop (SIGTERM) runs no hook until the worker has exited: before,
    its WebSocket clients were cut off without a close packet (gevent) or left waiting for
    --graceful-timeout (threads), and the lease stayed taken until it expired. Now they get
    Socket.IO's server disconnect, as from random_stream.py, and the lease is released."""
    if worker[1] == "gevent":
        pytest.importorskip("gevent")
    port = free_port()
    h = host(*gunicorn("-w", "1", "--graceful-timeout", "120", *worker, port=port), port=port,
             env={"RANDOM_STREAM_MESSAGE_QUEUE": redis_url, "RANDOM_STREAM_DB": ""})
    h.wait_until_answering()
    reasons: list[str] = []
    gone = threading.Event()
    client = socketio.Client(reconnection=False)
    client.on("disconnect", lambda reason=None: (reasons.append(reason), gone.set()))
    client.connect(h.url, transports=["websocket"], wait_timeout=10)
    try:
        os.killpg(h.proc.pid, signal.SIGTERM)
        assert gone.wait(60), h.log()  # (gunicorn's own wait would be 120 s)
        assert reasons == [client.reason.SERVER_DISCONNECT], (reasons, h.log())
        h.proc.wait(60)
    finally:
        client.disconnect()
    log = h.log()
    assert "stopping: 1 client(s) connected" in log, log
    assert "lease released at seq" in log, log


def test_gunicorn_preload_with_the_gevent_worker_is_refused_in_one_line(host):
    """Fails before: with --preload the app was made in the master before gevent patched the
    standard library, took threads for its async mode, and the gevent worker answered
    nothing. Now gunicorn.conf.py refuses it before listening: one line, exit status 2."""
    pytest.importorskip("gevent")
    port = free_port()
    h = host(*gunicorn("--preload", "-w", "1", "-k", "gevent", port=port), port=port)
    assert h.proc.wait(60) == 2, h.log()
    errors = [line for line in h.log().splitlines() if line.startswith("random_stream: error:")]
    assert errors == [errors[0]] and "--preload" in errors[0], h.log()
    with pytest.raises(OSError):
        http_get(h.url + "/healthz", timeout=1)
