"""Installs as users do: the seed's three packages alone; `pip install .` and its console
command; declared ranges are the tested ones, on every Python the project declares; a failure
the server answers with a 500 leaves a line in the log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websocket
from conftest import ROOT, ServerProcess, free_port, http_get
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families

SEED_PACKAGES = ["flask", "flask-socketio", "eventlet"]  # the project's original install line
CONSTRAINTS = Path(os.environ.get("RANDOM_STREAM_TEST_CONSTRAINTS", ROOT / "constraints.txt"))
# tests/run's smoke part installs the app into a venv of another Python and names it here.
INSTALLED_VENV = os.environ.get("RANDOM_STREAM_TEST_INSTALLED")
PYTHONS = ("3.10", "3.11", "3.12", "3.13")  # requires-python >=3.10, and each one tested


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
        assert viewer.histories and viewer.histories[0]["stream"] == {
            "id": http_get(server.url + "/api/history?limit=1")[1]["stream"]["id"],
            "min": 0, "max": 100, "interval": 0.1}
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


def _pins(path: Path, python: str) -> dict[str, str]:
    """name -> the version a constraints file pins on Python `python` (its markers decide)."""
    environment = {"python_version": python, "python_full_version": python + ".0"}
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" not in line:
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            name = canonicalize_name(requirement.name)
            assert name not in pins, f"{path.name}: two pins of {name} for Python {python}"
            pins[name] = next(iter(requirement.specifier)).version
    return pins


@pytest.mark.parametrize("python", PYTHONS)
def test_declared_ranges_are_the_tested_ones(python):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pytest's own backport
        tomllib = pytest.importorskip("tomli")
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=" + PYTHONS[0]
    extras = project["optional-dependencies"]
    runtime = [Requirement(r) for r in project["dependencies"] + extras["redis"] + extras["gevent"]
               + extras["gunicorn"]]
    tests = [Requirement(r) for r in extras["test"]]
    assert {r.name.lower() for r in runtime} == _requirement_names(ROOT / "requirements.txt")
    assert {r.name.lower() for r in tests} == _requirement_names(ROOT / "tests/requirements.txt")
    assert {r.name.lower() for r in runtime} >= set(SEED_PACKAGES)
    latest = _pins(ROOT / "constraints.txt", python)
    oldest = _pins(ROOT / "constraints-oldest.txt", python)
    for requirement in runtime + tests:
        name = canonicalize_name(requirement.name)
        assert requirement.specifier.contains(latest[name]), (name, latest[name])
    for requirement in runtime + tests:  # each lower bound is the version the --oldest run installs
        name = canonicalize_name(requirement.name)
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        assert lower and Version(oldest[name]) == Version(lower[0]), (name, oldest.get(name), lower)


def test_an_installed_apps_database_folder_follows_the_xdg_rule(monkeypatch, tmp_path):
    from randstream import paths

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert paths.data_home() == tmp_path / "data" / "random-stream"
    default = tmp_path / "home" / ".local" / "share" / "random-stream"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # not absolute: ignored, as the rule says
    assert paths.data_home() == default
    monkeypatch.delenv("XDG_DATA_HOME")
    assert paths.data_home() == default
    assert not paths.INSTALLED and paths.ASSETS == ROOT  # a checkout: its own folders


def test_a_database_folder_that_cannot_be_made_is_one_line_naming_it(tmp_path):
    from randstream import paths
    from randstream.config import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the folder would go
    with pytest.raises(ConfigError, match=r"cannot create .*file/instance for the database"):
        paths.default_db(str(blocker / "instance"))


def test_importing_the_package_main_module_serves_nothing():
    # pydoc, pkgutil.walk_packages and the like import every module: only `python -m
    # randstream` may start a server.
    run = subprocess.run([sys.executable, "-c", "import randstream.__main__"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "RANDOM_STREAM_PORT": "0", "RANDOM_STREAM_DB": ":memory:"})
    assert run.returncode == 0 and run.stdout == "" and "serving" not in run.stderr, run.stderr


# The installed app: `pip install .` into a fresh venv, then what a user of it runs. ---------

@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with `pip install .` through the tested pins (or tests/run's)."""
    if INSTALLED_VENV:
        return Path(INSTALLED_VENV)
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", "-c", str(CONSTRAINTS), str(ROOT)],
        check=True, timeout=600, stdout=subprocess.DEVNULL,
    )
    return venv


def user_env(tmp_path: Path) -> dict[str, str]:
    """A user's environment: HOME and XDG_DATA_HOME of their own, no settings, no checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RANDOM_STREAM_", "PYTHON", "XDG_"))}
    return {**env, "HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "data")}


def run_installed(venv: Path, tmp_path: Path, *command: str) -> subprocess.CompletedProcess:
    """A command of the venv's bin/, from a folder outside the checkout."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    return subprocess.run([str(venv / "bin" / command[0]), *command[1:]], cwd=cwd,
                          env=user_env(tmp_path), capture_output=True, text=True, timeout=120)


class InstalledServer(ServerProcess):
    """The console command `random-stream`, with no --db: the data lives where paths.py says."""

    def __init__(self, venv: Path, tmp_path: Path, *args: str) -> None:
        super().__init__(args, None, tmp_path / "installed.log", None)
        self.env = {**user_env(tmp_path), "PYTHONUNBUFFERED": "1"}
        self.launcher = []
        self.venv = venv

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "random-stream"), *super().command()[1:]]


INSPECT = """
import json, sys, sysconfig
import random_stream, randstream.paths as paths
from randstream.transport import tested_ranges
print(json.dumps({"purelib": sysconfig.get_paths()["purelib"], "door": random_stream.__file__,
                  "assets": str(paths.ASSETS), "installed": paths.INSTALLED,
                  "ranges": tested_ranges(), "python": sys.version_info[:2]}))
"""


@pytest.mark.slow
@pytest.mark.installed
def test_the_installed_package_carries_its_page_and_requirements(installed_venv, tmp_path):
    run = run_installed(installed_venv, tmp_path, "python", "-c", INSPECT)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    purelib = Path(found["purelib"])
    assert purelib.is_relative_to(installed_venv)
    assert Path(found["door"]) == purelib / "random_stream.py"
    assert found["installed"] and Path(found["assets"]) == purelib / "randstream"
    for folder in ("templates", "static"):  # inside the package, nothing at the top level
        assert not (purelib / folder).exists()
        shipped = {p.relative_to(purelib / "randstream" / folder)
                   for p in (purelib / "randstream" / folder).rglob("*") if p.is_file()}
        assert shipped == {p.relative_to(ROOT / folder)
                           for p in (ROOT / folder).rglob("*") if p.is_file()}
    # No pyproject.toml there: the fast path's version check reads the wheel's metadata.
    from randstream.transport import tested_ranges

    def clauses(ranges):
        return {name: set(spec.split(",")) for name, spec in ranges.items()}

    assert clauses(found["ranges"]) == clauses(tested_ranges()) and len(found["ranges"]) == 3


@pytest.mark.slow
@pytest.mark.installed
def test_the_console_command_serves_the_dashboard_with_its_css_and_js(installed_venv, tmp_path):
    server = InstalledServer(installed_venv, tmp_path, "--interval", "0.1").start(60)
    try:
        status, page = server.get("/")
        assert status == 200 and 'id="current-value"' in page
        assert (ROOT / "static/css/dashboard.css").read_text() in page  # inline, by its hash
        linked = set(re.findall(r'(?:src|href)="(/static/[^"?]+)', page))
        assert "/static/js/dashboard.js" in linked and "/static/favicon.svg" in linked
        modules = {"/static/js/" + p.name for p in (ROOT / "static/js").glob("*.js")}
        for path in sorted(linked | modules | {"/static/css/dashboard.css"}):
            status, body = server.get(path)
            assert status == 200, path
            assert body == (ROOT / path.lstrip("/")).read_text(), path
        deadline = time.monotonic() + 20
        while server.get("/api/latest")[1].get("seq", 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        last = server.get("/api/latest")[1]["seq"]
        assert last >= 3
        assert server.stop() == 0
    finally:
        server.kill()
    log = server.log()
    assert "async mode eventlet" in log and "transport: fast path" in log, log
    assert "WARNING" not in log, log
    # The history lives outside the venv, where paths.py documents it ($XDG_DATA_HOME).
    db = tmp_path / "data" / "random-stream" / "random_stream.sqlite3"
    assert db.is_file()
    assert not list(installed_venv.rglob("*.sqlite3"))
    # A reinstall leaves it alone: the next start goes on from the last reading.
    if not INSTALLED_VENV:  # tests/run's smoke venv is its own; reinstalling it proves no more
        subprocess.run(
            [str(installed_venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", "--force-reinstall", "--no-deps", str(ROOT)],
            check=True, timeout=600, stdout=subprocess.DEVNULL,
        )
    again = InstalledServer(installed_venv, tmp_path, "--interval", "0.1").start(60)
    try:
        status, latest = again.get("/api/latest")
        assert status == 200 and latest["seq"] >= last
    finally:
        again.kill()


class InstalledGunicorn(InstalledServer):
    """The README's gunicorn command, as an installed app's user runs it: the settings
    module named, from a folder of their own."""

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "gunicorn"), "-c", "python:randstream.gunicorn_conf",
                "-w", "1", "-k", "gevent", "--bind", f"127.0.0.1:{self.port}",
                "random_stream:create_app()"]

    def start(self, timeout: float = 60.0) -> InstalledGunicorn:
        """Outside the checkout: neither its gunicorn.conf.py nor its randstream/ in reach."""
        cwd = self.log_path.parent / "elsewhere"
        cwd.mkdir(exist_ok=True)
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(self.command(), cwd=cwd, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self.wait_until_answering(timeout)


@pytest.mark.slow
def test_the_gunicorn_extra_serves_the_readmes_command_from_a_fresh_venv(tmp_path_factory,
                                                                         tmp_path):
    """pip install 'random-stream[gunicorn]': gunicorn's gevent worker also needs packaging,
    which gunicorn 27.0.1 does not declare (before: no such extra, and `pip install gunicorn
    gevent` left the worker dying with ModuleNotFoundError)."""
    venv = tmp_path_factory.mktemp("gunicorn") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", "-c", str(CONSTRAINTS), f"{ROOT}[gunicorn]"],
        check=True, timeout=600, stdout=subprocess.DEVNULL,
    )
    server = InstalledGunicorn(venv, tmp_path)
    server.env["RANDOM_STREAM_INTERVAL"] = "0.1"
    server.start()
    try:
        ws = websocket.create_connection(
            server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket", timeout=10)
        assert ws.recv().startswith("0{")
        ws.send("40")
        while not ws.recv().startswith('42["random_number"'):
            pass
        ws.close()
    finally:
        server.stop()
    log = server.log()
    assert "direct WebSocket fan-out under gevent on gunicorn's gevent worker" in log, log
    assert "gunicorn gevent worker" in log and "Traceback" not in log, log


@pytest.mark.slow
@pytest.mark.installed
@pytest.mark.parametrize("command, usage", [
    (("random-stream", "--help"), "usage: random-stream "),
    (("python", "-m", "randstream", "--help"), "usage: python -m randstream "),
])
def test_the_console_command_has_help(installed_venv, tmp_path, command, usage):
    run = run_installed(installed_venv, tmp_path, *command)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(usage)
    assert "--db DB" in run.stdout and "random-stream/" in run.stdout
    assert run.stderr == ""  # no deprecation notice, no traceback


@pytest.mark.slow
@pytest.mark.installed
def test_flask_finds_the_installed_door(installed_venv, tmp_path):
    run = run_installed(installed_venv, tmp_path, "flask", "--app", "random_stream", "routes")
    assert run.returncode == 0, run.stderr
    assert "/api/latest" in run.stdout and "static" in run.stdout
    assert (tmp_path / "data" / "random-stream" / "random_stream.sqlite3").is_file()


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
    # Admission consults the same policy first (randstream/admission.py).
    app = create_app(settings)
    broken = lambda origin: True  # noqa: E731
    app.extensions["socketio"].server.eio.cors_allowed_origins = broken
    app.extensions["stream"].admission.origin_allowed = broken
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
