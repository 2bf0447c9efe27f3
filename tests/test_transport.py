"""randstream/transport: every library internal is checked at start; a moved one means the
libraries' own path, announced once, with the stream still delivered.

The per-point tests below fail when an upgrade of python-engineio, python-socketio or
eventlet moves what the fast path or the limits rely on: that is their job.
"""

import logging
import re
import sys
import time

import engineio
import pytest
import socketio
from conftest import ROOT
from engineio import socket as eio_socket
from test_fanout import metric, raw_client

from randstream import config
from randstream import transport as transport_package
from randstream.config import ConfigError
from randstream.transport import (
    Transport,
    UnsupportedLibrary,
    engineio_checks,
    in_range,
)
from randstream.transport import eventlet as eventlet_adapter
from randstream.transport import gevent as gevent_adapter
from randstream.transport import gunicorn as gunicorn_adapter

REQUIRED, FAST = engineio_checks.extension_points("threading")
EVERY_POINT = (REQUIRED + FAST + eventlet_adapter.EXTENSION_POINTS
               + gevent_adapter.EXTENSION_POINTS + gevent_adapter.HTTP_POINTS
               + gunicorn_adapter.EXTENSION_POINTS)


@pytest.mark.parametrize("point", EVERY_POINT, ids=lambda p: p.name)
def test_each_extension_point_is_where_the_adapter_expects_it(point):
    assert point.problem() is None


def test_the_eventlet_probes_hold_under_eventlets_own_hub_too(tmp_path):
    """The checks run in the server after monkey_patch(): there they must pass as well."""
    import subprocess

    script = (f"import eventlet; eventlet.monkey_patch(); import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from randstream.transport import eventlet as e, engineio_checks as x\n"
              "r, f = x.extension_points('eventlet')\n"
              "print([p.name for p in r + f + e.EXTENSION_POINTS + e.BODY_POINTS if p.problem()])")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_the_gevent_probes_hold_after_gevents_monkey_patching_too():
    """The checks run in the server after gevent's patch_all(): there they must pass as well."""
    import subprocess

    script = (f"from gevent import monkey; monkey.patch_all(); import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from randstream.transport import gevent as g, engineio_checks as x\n"
              "r, f = x.extension_points('gevent')\n"
              "print([p.name for p in r + f + g.EXTENSION_POINTS + g.HTTP_POINTS + g.BODY_POINTS"
              " if p.problem()])")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


# The checks notice a change: each is shown one (a library's attribute taken away) -------------

def _drop(monkeypatch, owner, name):
    monkeypatch.delattr(owner, name)


def _disconnect_with_bookkeeping_of_its_own(self, sid, namespace, **kwargs):
    """A newer basic_disconnect that also clears a table RoomIndex does not know."""
    for room in self.rooms_of_sid.pop((namespace, sid), ()):
        self.basic_leave_room(sid, namespace, room)


CHANGES = [
    ("socketio Server._send_eio_packet", lambda m: _drop(m, socketio.Server, "_send_eio_packet")),
    ("engineio Socket.schedule_ping and last_ping",
     lambda m: _drop(m, eio_socket.Socket, "schedule_ping")),
    ("engineio Socket._websocket_handler and Socket.queue",
     lambda m: _drop(m, eio_socket.Socket, "_websocket_handler")),
    ("engineio Server._async['websocket']",
     lambda m: m.setattr(eio_socket.Socket, "_upgrade_websocket", lambda self, e, s: None)),
    ("engineio Server.sockets",
     lambda m: m.setattr(eio_socket.Socket, "close", lambda self, wait=True: None)),
    ("engineio Server.handlers",
     lambda m: m.setattr(engineio.Server, "_trigger_event", lambda self, event, *a: None)),
    ("socketio Manager.basic_enter_room, basic_leave_room, basic_disconnect",
     lambda m: m.setattr(socketio.base_manager.BaseManager, "basic_disconnect",
                         _disconnect_with_bookkeeping_of_its_own)),
    ("socketio Server.packet_class, Manager.sid_from_eio_sid, engineio "
     "Server.cors_allowed_origins/max_http_buffer_size",
     lambda m: _drop(m, next(c for c in socketio.Manager.__mro__ if "sid_from_eio_sid" in vars(c)),
                     "sid_from_eio_sid")),
]


@pytest.mark.parametrize("name, change", CHANGES, ids=[c[0] for c in CHANGES])
def test_a_check_reports_its_internal_when_it_moves(monkeypatch, name, change):
    change(monkeypatch)
    point = next(p for p in EVERY_POINT if p.name == name)
    assert point.problem() is not None


def test_eventlet_checks_report_a_moved_internal(monkeypatch):
    import eventlet.websocket
    import eventlet.wsgi

    monkeypatch.setattr(eventlet.wsgi.HttpProtocol, "get_environ", lambda self: {})
    monkeypatch.setattr(eventlet.websocket.RFC6455WebSocket, "_send_closing_frame",
                        lambda self, *a, **k: None)
    problems = {p.name: p.problem() for p in eventlet_adapter.EXTENSION_POINTS}
    assert problems["eventlet HttpProtocol.conn_state and environ eventlet.*"]
    assert problems["eventlet WebSocket.websocket_closed"]
    assert problems["eventlet GreenSocket.fd"] is None


def test_gevent_checks_report_a_moved_internal(monkeypatch):
    import gevent.pywsgi

    original = gevent.pywsgi.WSGIHandler.handle
    monkeypatch.setattr(gevent.pywsgi.WSGIHandler, "handle", lambda self: original(self))
    problems = {p.name: p.problem() for p in gevent_adapter.EXTENSION_POINTS}
    assert problems["gevent WSGIHandler.handle and its socket"]
    assert problems["gevent socket._sock"] is None


def test_gunicorn_checks_report_a_moved_internal(monkeypatch):
    from gunicorn.http import wsgi
    from gunicorn.workers import base_async

    monkeypatch.setattr(wsgi, "default_environ", lambda req, sock, cfg: {})
    monkeypatch.setattr(base_async.AsyncWorker, "handle_request", lambda self, *args: None)
    problems = {p.name: p.problem() for p in gunicorn_adapter.EXTENSION_POINTS}
    assert all(problems.values()), problems


def test_a_moved_gunicorn_internal_is_one_warning_and_engineios_driver(monkeypatch, caplog):
    """Under gunicorn's gevent worker the direct path needs gunicorn to hand the connection
    over; if that moved, its WebSocket clients take engine.io's own driver, said once."""
    import gunicorn.workers.ggevent  # noqa: F401  (what the worker's process has loaded)
    from gunicorn.workers import base_async

    assert Transport("gevent", "auto", wsgi_host=True).hand_over is gunicorn_adapter.HandOver
    monkeypatch.setattr(base_async.AsyncWorker, "handle_request", lambda self, *args: None)
    transport = Transport("gevent", "auto", wsgi_host=True)
    assert transport.fast and transport.hand_over is None
    with caplog.at_level(logging.INFO, logger="randstream.transport"):
        transport.log_choice()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "AsyncWorker.handle_request" in warnings[0], warnings
    assert "WebSocket clients on engine.io's own driver" in caplog.records[-1].getMessage()


@pytest.mark.parametrize("point", eventlet_adapter.BODY_POINTS + gevent_adapter.BODY_POINTS,
                         ids=lambda p: p.name)
def test_each_body_deadline_point_is_where_the_adapter_expects_it(point):
    assert point.problem() is None


def test_body_deadline_checks_report_a_moved_internal(monkeypatch):
    import eventlet.wsgi
    import gevent.pywsgi

    monkeypatch.setattr(eventlet.wsgi.HttpProtocol, "handle_one_request", lambda self: None)
    monkeypatch.setattr(gevent.pywsgi.WSGIHandler, "handle_one_response", lambda self: None)
    assert eventlet_adapter.body_problems() and gevent_adapter.body_problems()


def test_under_a_wsgi_host_the_servers_own_http_checks_say_nothing(monkeypatch):
    """The body deadline and our HTTP answers are random_stream.py's server's (its
    http_protocol): a WSGI host reads requests itself, so their moved internals are no
    warning there (hosts.md says what a proxy in front must do instead)."""
    import gevent.pywsgi

    monkeypatch.setattr(gevent.pywsgi.WSGIHandler, "handle_one_response", lambda self: None)
    monkeypatch.setattr(gevent.pywsgi.WSGIHandler, "process_result", lambda self: None)
    own = Transport("gevent", "auto")
    assert own.body_problems and own.parser_problems
    hosted = Transport("gevent", "auto", wsgi_host=True)
    assert hosted.body_problems == [] and hosted.parser_problems == []


def test_a_moved_pywsgi_write_is_one_warning_and_the_fast_path_stays(monkeypatch, caplog):
    """Nothing of HTTP after an upgraded WebSocket (gevent.py's HTTP_POINTS) is no fast path:
    if pywsgi stops writing through write(), its own way stays, said once."""
    import gevent.pywsgi

    monkeypatch.setattr(gevent.pywsgi.WSGIHandler, "process_result", lambda self: None)
    transport = Transport("gevent", "auto")
    assert transport.fast
    with caplog.at_level(logging.INFO, logger="randstream.transport"):
        transport.log_choice()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "gevent WSGIHandler.write" in warnings[0], warnings


def test_a_moved_internal_means_the_libraries_own_path_and_one_warning(monkeypatch, caplog):
    monkeypatch.delattr(eio_socket.Socket, "_websocket_handler")
    transport = Transport("threading", "auto")
    assert not transport.fast
    assert type(transport.client_manager()) is socketio.Manager
    with caplog.at_level(logging.INFO, logger="randstream.transport"):
        transport.log_choice()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Socket._websocket_handler" in warnings[0].getMessage()
    assert "the libraries' own path" in caplog.records[-1].getMessage()


def test_a_changed_room_bookkeeping_means_python_socketios_own_manager(monkeypatch, caplog):
    monkeypatch.setattr(socketio.base_manager.BaseManager, "basic_disconnect",
                        _disconnect_with_bookkeeping_of_its_own)
    transport = Transport("threading", "auto")
    assert type(transport.client_manager()) is socketio.Manager
    with caplog.at_level(logging.INFO, logger="randstream.transport"):
        transport.log_choice()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "basic_disconnect now also uses pop, rooms_of_sid" in warnings[0]


def test_a_moved_internal_the_limits_need_refuses_the_start_in_one_line(monkeypatch):
    monkeypatch.setattr(engineio.Server, "_trigger_event", lambda self, event, *a: None)
    with pytest.raises(UnsupportedLibrary) as caught:
        Transport("threading", "auto")
    assert isinstance(caught.value, ConfigError) and "\n" not in str(caught.value)
    assert "engineio Server.handlers" in str(caught.value)


def test_fast_path_off_needs_no_fast_internal(monkeypatch):
    for name, change in CHANGES:
        if not name.startswith(("engineio Server.handlers", "engineio Server._async",
                                "engineio Server.sockets", "socketio Server.packet_class")):
            change(monkeypatch)
    transport = Transport("threading", "off")
    assert not transport.fast and transport.problems == []
    assert type(transport.client_manager()) is socketio.Manager
    assert transport.server_runtime is None


# Versions --------------------------------------------------------------------------------

def test_the_tested_ranges_are_the_declared_ones():
    declared = (ROOT / "pyproject.toml").read_text()
    ranges = transport_package.tested_ranges()
    assert set(ranges) == {"python-engineio", "python-socketio", "eventlet"}
    for name, spec in ranges.items():
        assert re.search(rf'^\s*"{re.escape(name)}\s*{re.escape(spec)}"', declared, re.M | re.I)


@pytest.mark.parametrize("version, spec, ok", [
    ("4.15.1", ">=4.11,<5", True), ("5.0.0", ">=4.11,<5", False), ("4.10.9", ">=4.11,<5", False),
    ("0.41.3", ">=0.36,<1", True), ("5.18.1rc1", ">=5.12,<6", True), ("5.12", "==5.12.0", True),
])
def test_versions_are_compared_by_release_number(version, spec, ok):
    assert in_range(version, spec) is ok


def test_a_version_outside_the_tested_range_turns_the_fast_path_off(monkeypatch):
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version",
                        lambda n: "6.0.0" if n == "python-socketio" else real(n))
    transport = Transport("threading", "auto")
    assert not transport.fast
    spec = transport_package.tested_ranges()["python-socketio"]
    assert transport.problems == [f"python-socketio 6.0.0 is outside the tested range {spec}"]


# The switch ------------------------------------------------------------------------------

def test_fast_path_flag_and_env():
    assert config.load([]).fast_path == "auto"
    assert config.load([], {"RANDOM_STREAM_FAST_PATH": "OFF"}).fast_path == "off"
    assert config.load(["--fast-path", "auto"], {"RANDOM_STREAM_FAST_PATH": "off"}).fast_path == "auto"
    with pytest.raises(ConfigError, match=r"^--fast-path must be auto or off \(got 'fast'\)$"):
        config.load(["--fast-path", "fast"])


# Real servers ----------------------------------------------------------------------------

def _log_lines(server, level):
    return [line for line in server.log().splitlines() if f" {level} " in line]


@pytest.mark.parametrize("mode, simulation, named", [
    ("eventlet", "websocket_handler", "Socket._websocket_handler"),
    ("eventlet", "engineio_version", "python-engineio 5.0.0"),
    ("gevent", "websocket_handler", "Socket._websocket_handler"),
    ("gevent", "gevent_handler", "gevent WSGIHandler.handle"),
])
def test_a_server_with_a_moved_internal_warns_once_and_still_streams(
        server_factory, viewers, mode, simulation, named):
    server = server_factory("--interval", "0.1", "--async-mode", mode,
                            env={"RANDOM_STREAM_FAST_PATH": "auto"},
                            launcher=[str(ROOT / "tests" / "moved_internal.py"), simulation])
    viewer = viewers(server.url)
    viewer.wait_for(lambda: len(viewer.numbers) >= 5)
    seqs = [seq for seq, _ in viewer.readings()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    ws = raw_client(server.url)  # a raw WebSocket client too, through engine.io's own handler
    assert any(ws.recv().startswith('42["random_number"') for _ in range(5))
    ws.close()
    warnings = _log_lines(server, "WARNING")
    assert len(warnings) == 1 and named in warnings[0], server.log()
    assert "transport: the libraries' own path (a check failed)" in server.log()
    assert metric(server, 'random_stream_broadcast_sends_total{path="direct"}') == 0


def test_each_path_says_at_start_which_it_is(server_factory):
    fast = server_factory("--interval", "0.2", env={"RANDOM_STREAM_FAST_PATH": "auto"})
    off = server_factory("--interval", "0.2", "--fast-path", "off")
    deadline = time.monotonic() + 10
    while "transport:" not in off.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [line.split(" INFO ")[1] for line in _log_lines(fast, "INFO") if "transport:" in line] \
        == ["randstream.transport: transport: fast path: direct WebSocket fan-out under eventlet, one pinger"]
    assert "transport: the libraries' own path (--fast-path off)" in off.log()
    assert _log_lines(fast, "WARNING") == _log_lines(off, "WARNING") == []
