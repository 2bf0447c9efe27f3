"""Installs as users do: the seed's three packages alone; declared ranges are the tested ones;
a failure the server answers with a 500 leaves a line in the log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import websocket
from conftest import ROOT, ServerProcess, free_port, http_get
from prometheus_client.parser import text_string_to_metric_families

SEED_PACKAGES = ["flask", "flask-socketio", "eventlet"]  # the project's original install line
CONSTRAINTS = Path(os.environ.get("RANDOM_STREAM_TEST_CONSTRAINTS", ROOT / "constraints.txt"))


class SeedServer(ServerProcess):
    """`python random_stream.py` with another interpreter: the seed virtualenv's."""

    def __init__(self, python: Path, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.python = python

    def command(self) -> list[str]:
        return [str(self.python), *super().command()[1:]]


@pytest.fixture(scope="module")
def seed_python(tmp_path_factory) -> Path:
    """A fresh virtualenv with only `pip install flask flask-socketio eventlet` (tested pins)."""
    venv = tmp_path_factory.mktemp("seed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(CONSTRAINTS), *SEED_PACKAGES],
        check=True, timeout=600, stdout=subprocess.DEVNULL,
    )
    return python


def installed(python: Path) -> set[str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze",
                          "--disable-pip-version-check"], capture_output=True, text=True, check=True)
    return {line.split("==")[0].lower() for line in out.stdout.splitlines()}


@pytest.mark.slow
def test_the_seed_install_serves_the_whole_dashboard(seed_python, tmp_path, viewers):
    assert not installed(seed_python) & {"redis", "gevent", "prometheus-client"}
    db = tmp_path / "seed.sqlite3"
    server = SeedServer(seed_python, ("--interval", "0.1"), str(db), tmp_path / "seed.log", None).start(60)
    try:
        viewer = viewers(server.url)
        viewer.wait_for(lambda: len(viewer.numbers) >= 5)
        seqs = [seq for seq, _ in viewer.readings()]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert viewer.histories and viewer.histories[0]["stream"] == {"min": 0, "max": 100, "interval": 0.1}
        status, page = http_get(server.url + "/")
        assert status == 200 and 'id="current-value"' in page
        status, stats = http_get(server.url + "/api/stats")
        assert status == 200 and stats["count"] >= 5
        status, metrics = http_get(server.url + "/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(metrics)}
        assert families["random_stream_ticks"].samples[0].value >= 5
        assert families["random_stream_broadcast_seconds"].type == "histogram"
        assert "async mode eventlet" in server.log()
        last = viewer.last_seq()
        assert server.stop() == 0
    finally:
        server.kill()
    # SQLite persistence: a restart continues after the last seq.
    again = SeedServer(seed_python, ("--interval", "0.1"), str(db), tmp_path / "seed2.log", None).start(60)
    try:
        status, latest = http_get(again.url + "/api/latest")
        assert status == 200 and latest["seq"] >= last
    finally:
        again.kill()


@pytest.mark.slow
@pytest.mark.parametrize("flag, message", [
    (("--async-mode", "gevent"), "--async-mode gevent needs the Python package gevent: pip install gevent"),
    (("--message-queue", "redis://127.0.0.1:6379/0"),
     "--message-queue needs the Python package redis: pip install redis"),
])
def test_a_feature_whose_package_is_missing_is_one_line(seed_python, flag, message):
    port = free_port()
    run = subprocess.run(
        [str(seed_python), str(ROOT / "random_stream.py"), "--port", str(port), "--db", ":memory:", *flag],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("RANDOM_STREAM_")},
    )
    assert run.returncode == 2
    assert run.stderr == f"random_stream: error: {message}\n"  # before serving: nothing else


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[<>=!~;\[ ]", line)[0].lower())
    return names


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_declared_ranges_are_the_tested_ones():
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    runtime = [Requirement(r) for r in project["dependencies"] + extras["redis"] + extras["gevent"]]
    tests = [Requirement(r) for r in extras["test"]]
    assert {r.name.lower() for r in runtime} == _requirement_names(ROOT / "requirements.txt")
    assert {r.name.lower() for r in tests} == _requirement_names(ROOT / "tests/requirements.txt")
    assert {r.name.lower() for r in runtime} >= set(SEED_PACKAGES)
    latest, oldest = _pins(ROOT / "constraints.txt"), _pins(ROOT / "constraints-oldest.txt")
    for requirement in runtime + tests:
        name = requirement.name.lower()
        assert requirement.specifier.contains(latest[name]), (name, latest[name])
    for requirement in runtime + tests:  # each lower bound is the version the --oldest run installs
        name = requirement.name.lower()
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        assert lower and Version(oldest[name]) == Version(lower[0]), (name, oldest.get(name), lower)


LAUNCHER = """
import sys
sys.path.insert(0, {root!r})
from randstream.server import prepare_async_mode
prepare_async_mode(sys.argv[1:])
import random_stream

create_app = random_stream.create_app

def broken_app(settings=None):
    # engine.io 4.12+ calls cors_allowed_origins(origin, environ); a one-argument policy is
    # what python-engineio 4.11 expected: the same TypeError in every handshake, mirrored.
    app = create_app(settings)
    app.extensions["socketio"].server.eio.cors_allowed_origins = lambda origin: True
    return app

random_stream.create_app = broken_app
random_stream.main(sys.argv[1:])
"""


class BrokenServer(ServerProcess):
    def __init__(self, launcher: Path, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.launcher = [str(launcher)]


@pytest.mark.parametrize("mode", ["eventlet", "gevent", "threading"])
def test_a_failing_websocket_handshake_is_a_500_logged_once(tmp_path, mode):
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(root=str(ROOT)))
    server = BrokenServer(launcher, ("--async-mode", mode), ":memory:", tmp_path / "broken.log", None).start()
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(
                server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket", timeout=10)
        assert refused.value.status_code == 500
        assert b"Traceback" not in (refused.value.resp_body or b"")
        server.stop()
    finally:
        server.kill()
    log = server.log()
    assert log.count("takes 1 positional argument but 2 were given") == 1, log
