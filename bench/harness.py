"""Process plumbing shared by run.py, soak.py and client_cost.py.

``ServerProcess`` starts a server on 127.0.0.1 pinned to a CPU with a raised fd
limit and waits for ``/healthz``; ``GeneratorProcess`` drives ``loadgen.py --control``.
Every process started here is stopped by ``stop()`` (also from ``atexit`` and on Ctrl-C).
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable

_running: list[subprocess.Popen] = []


def process_cpu_seconds(pid: int, ps=None) -> float:
    """User+system CPU of all threads of ``pid``: nanosecond schedstat where Linux has it."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        t = ps.cpu_times()
        return t.user + t.system


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


FD_WANTED = 65536  # gevent's WebSocket takes 2 fds a client: 10,000 clients need > 20,000


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to FD_WANTED (root may lift the hard limit too), else to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FD_WANTED:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (FD_WANTED, FD_WANTED))
            return FD_WANTED
        except (ValueError, OSError):
            pass
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


NICE = 0  # niceness for everything spawned; run.py --nice sets it (negative needs root)


def _child_setup(cpus: set[int] | None, nice: int):
    def setup() -> None:
        os.setsid()  # own process group: Ctrl-C in the terminal reaches us, we stop them
        raise_fd_limit()
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            except OSError:
                pass

    return setup


def cpu_busy_seconds(cpu: int) -> float:
    """Seconds CPU ``cpu`` was busy with anything (all processes, interrupts)."""
    import psutil

    t = psutil.cpu_times(percpu=True)[cpu]
    return (
        sum(t)
        - t.idle
        - getattr(t, "iowait", 0.0)
        - getattr(t, "guest", 0.0)
        - getattr(t, "guest_nice", 0.0)
    )


def spawn(cmd: list[str], cpus: set[int] | None, **kwargs) -> subprocess.Popen:
    kwargs.setdefault("cwd", ROOT)
    proc = subprocess.Popen(cmd, preexec_fn=_child_setup(cpus, NICE), **kwargs)
    _running.append(proc)
    return proc


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    if proc in _running:
        _running.remove(proc)


def stop_all() -> None:
    for proc in list(_running):
        try:
            stop(proc, 3.0)
        except Exception:
            proc.kill()


atexit.register(stop_all)


def _sigterm(signum, frame):
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _sigterm)


class ServerProcess:
    """A server under test: ``python SCRIPT --host 127.0.0.1 --port P ...``."""

    def __init__(
        self, name: str, cmd: list[str], port: int, cpus: set[int] | None, log: Path,
        env: dict[str, str] | None = None, cwd: Path | None = None,
    ) -> None:
        import psutil

        self.name = name
        self.port = port
        self.log_path = log
        self.log = open(log, "wb")
        # Every load client comes from 127.0.0.1: lift the per-address limit (older
        # versions ignore the variable). `env`: settings of a WSGI host's app (gunicorn).
        env = {"RANDOM_STREAM_MAX_PER_ADDRESS": "1000000", **os.environ, **(env or {})}
        self.proc = spawn(
            cmd, cpus, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd or ROOT,  # gunicorn reads gunicorn.conf.py from where it starts
        )
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout: float = 30.0, poll: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(poll)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s; see {self.log_path}")

    def processes(self) -> list:
        """The server's process and its children (gunicorn's workers), as psutil sees them."""
        import psutil

        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return [self.ps]

    def cpu_seconds(self) -> float:
        """CPU of the server's processes now alive (gunicorn: the master and its workers)."""
        total = 0.0
        for p in self.processes():
            try:
                total += process_cpu_seconds(p.pid, p)
            except Exception:  # a worker gone meanwhile
                pass
        return total

    def rss(self) -> int:
        total = 0
        for p in self.processes():
            try:
                total += p.memory_info().rss
            except Exception:
                pass
        return total

    def metrics(self) -> dict[str, float]:
        """The unlabelled samples of its /metrics (histograms' _sum and _count included);
        {} from a server without them (the peers)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError, UnicodeDecodeError):
            return {}
        samples = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if line and not line.startswith("#") and "{" not in name:
                try:
                    samples[name] = float(value)
                except ValueError:
                    pass
        return samples

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


class LineReader:
    """Reads the JSON lines a loadgen.py process prints, waiting for one event."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def read(self, expect: str | tuple[str, ...], timeout: float) -> dict:
        import select

        expect = (expect,) if isinstance(expect, str) else expect
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select(
                [self.proc.stdout], [], [], max(0.0, deadline - time.monotonic())
            )
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(
                    f"load generator exited ({self.proc.poll()}) waiting for {expect}"
                )
            msg = json.loads(line)
            if msg.get("event") in expect:
                return msg
        raise RuntimeError(f"load generator: no {expect} within {timeout:.0f}s")


class GeneratorProcess:
    """``loadgen.py --control``: ramp, then ``start`` a measuring window on demand."""

    def __init__(
        self, port: int, clients: int, cpus: set[int] | None, samples_out: Path, extra=()
    ) -> None:
        import psutil

        cmd = [
            PYTHON,
            str(BENCH / "loadgen.py"),
            "--control",
            "--port",
            str(port),
            "--clients",
            str(clients),
            "--samples-out",
            str(samples_out),
            *extra,
        ]
        self.samples_out = samples_out
        self.proc = spawn(
            cmd, cpus, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.ps = psutil.Process(self.proc.pid)
        self.reader = LineReader(self.proc)

    def read(self, expect: str, timeout: float) -> dict:
        return self.reader.read(expect, timeout)

    def start(self, window_start: float, window_end: float, grace: float) -> None:
        """Measure readings whose ts is in [window_start, window_end] (epoch seconds)."""
        self.proc.stdin.write(f"start {window_start!r} {window_end!r} {grace!r}\n")
        self.proc.stdin.flush()

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid, self.ps)

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        stop(self.proc)
