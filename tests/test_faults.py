"""Faults with real processes and real SQLite: SIGKILL, SIGTERM, a full disk, a crashing tick."""

from __future__ import annotations

import subprocess
import threading
import time

import psutil
import pytest
from conftest import ROOT, ServerProcess, http_get
from prometheus_client.parser import text_string_to_metric_families
from rawsocket import Polling, RawSocket


class PipedServer(ServerProcess):
    """A server whose output goes through a pipe, not a file.

    The full-disk test lowers the process's file size limit (RLIMIT_FSIZE), which would
    also stop it writing its log to a file; a pipe is not limited.
    """

    def start(self, timeout: float = 20.0) -> PipedServer:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        return self.wait_until_answering(timeout)

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def log(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def piped_server(tmp_path):
    started = []

    def start(*args: str, db: str) -> PipedServer:
        server = PipedServer(args, db, tmp_path / "unused.log", None)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


def wait_until(predicate, timeout: float = 15.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out")


def numbers(sock: RawSocket, count: int) -> list[dict]:
    got = [sock.wait_event("random_number") for _ in range(count)]
    seqs = [r["seq"] for r in got]
    assert seqs == list(range(seqs[0], seqs[0] + count)), seqs
    return got


def metric(url: str, name: str) -> float:
    _, text = http_get(url + "/metrics")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no metric {name}")


def test_sigkill_and_restart_lose_nothing_that_was_sent(server_factory, tmp_path):
    db = str(tmp_path / "stream.sqlite3")
    server = server_factory("--interval", "0.05", db=db)
    sock = RawSocket(server.url)
    sock.join()
    seen = numbers(sock, 20)
    server.kill()  # SIGKILL, mid-stream: no shutdown code runs
    assert server.proc.returncode == -9
    sock.close()

    server.start()
    _, stored = server.get("/api/history?after=0&limit=10000")
    by_seq = {r["seq"]: r for r in stored["readings"]}
    assert all(by_seq.get(r["seq"]) == r for r in seen), "every reading a client saw survives"
    seqs = sorted(by_seq)
    assert seqs == list(range(1, seqs[-1] + 1)), "no seq skipped or reused across the kill"
    again = RawSocket(server.url)
    again.join()
    after = numbers(again, 3)
    assert after[0]["seq"] > seen[-1]["seq"]
    _, history = server.get(f"/api/history?after={seqs[-1] - 1}&limit=10")
    assert history["readings"][0]["seq"] == seqs[-1], "the stream continues from the store"
    again.close()


def test_sigterm_stops_within_seconds_with_every_kind_of_client(server_factory, record_property):
    server = server_factory("--interval", "0.2")
    joined = [RawSocket(server.url) for _ in range(3)]
    for sock in joined:
        sock.join()
    never_joined = RawSocket(server.url)
    idle_polling = Polling(server.url)  # joined, then never polls again
    assert idle_polling.post(b"40")[0] == 200
    waiting_polling = Polling(server.url)
    assert waiting_polling.post(b"40")[0] == 200
    waiting_polling.poll()
    poller = threading.Thread(target=waiting_polling.poll, daemon=True)
    poller.start()  # a long poll in flight during the stop
    time.sleep(0.3)

    started = time.monotonic()
    exit_code = server.stop(timeout=15)
    took = time.monotonic() - started
    record_property("sigterm_stop_seconds", round(took, 3))
    print(f"\nSIGTERM to exit, 6 connections (5 joined): {took:.2f}s")

    assert exit_code == 0
    for sock in joined + [never_joined]:
        assert sock.wait_closed(timeout=2), "each WebSocket client sees the connection end"
    log = server.log()
    assert "stopping: 5 client(s) connected" in log and "stopped" in log
    assert "Traceback" not in log


def test_a_full_disk_is_reported_and_the_live_stream_goes_on(piped_server, tmp_path):
    db = str(tmp_path / "stream.sqlite3")
    server = piped_server("--interval", "0.05", db=db)
    sock = RawSocket(server.url)
    sock.join()
    numbers(sock, 3)
    process = psutil.Process(server.proc.pid)
    soft, hard = process.rlimit(psutil.RLIMIT_FSIZE)
    process.rlimit(psutil.RLIMIT_FSIZE, (0, hard))  # every file write now fails with EFBIG

    def unhealthy():
        status, body = server.get("/healthz")
        return body if status == 503 else None

    health = wait_until(unhealthy)
    problem = " ".join(health["problems"])
    assert "store:" in problem, health
    assert "disk is full" in problem or "disk I/O error" in problem, health
    during = numbers(sock, 10)  # the live stream carries on, seq by seq
    assert metric(server.url, "random_stream_store_errors_total") >= 10
    _, latest = server.get("/api/latest")
    assert latest["seq"] >= during[-1]["seq"], "the API serves readings from memory"

    process.rlimit(psutil.RLIMIT_FSIZE, (soft, hard))
    wait_until(lambda: server.get("/healthz")[0] == 200)
    numbers(sock, 3)
    log = server.log()
    print("\n" + "".join(line for line in server.lines if "store" in line))
    assert log.count("store failed") == 1, "one line when it breaks, not one per tick"
    failed = next(line for line in server.lines if "store failed" in line)
    assert "rollback" not in failed, "the log names the cause, not a follow-on error"
    assert "disk is full" in failed or "disk I/O error" in failed
    assert log.count("store recovered") == 1
    assert "Traceback" not in log
    sock.close()


def test_an_unreadable_database_at_start_is_one_clear_line(server_factory, tmp_path):
    db = tmp_path / "stream.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    server = server_factory(db=str(db), launch=False)
    with pytest.raises(RuntimeError, match="exited with 2"):
        server.start()
    log = server.log()
    assert "random_stream: error:" in log and "Traceback" not in log


def test_a_crashing_tick_is_logged_once_counted_and_the_stream_goes_on(stream, caplog,
                                                                      monkeypatch):
    deliver = stream.socketio.emit  # where the fan-out's Socket.IO broadcast ends
    calls = []

    def broadcast(event, data, *args, **kwargs):
        calls.append(data["seq"])
        if len(calls) == 2:
            raise RuntimeError("the broadcast blew up")
        deliver(event, data, *args, **kwargs)

    monkeypatch.setattr(stream.socketio, "emit", broadcast)
    runner = threading.Thread(target=stream.ticker.run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: stream.history.last_seq >= 5)
    finally:
        stream.ticker.stop()
        runner.join(5)
    assert stream.ticker.failures == 1
    seqs = [r.seq for r in stream.history.latest(100)]
    assert seqs == list(range(1, seqs[-1] + 1)), "the failed tick's reading is kept, no gap"
    failures = [r for r in caplog.records if "tick failed" in r.getMessage()]
    assert len(failures) == 1
    exposition = stream.metrics.exposition().decode()
    assert "random_stream_tick_failures_total 1.0" in exposition
