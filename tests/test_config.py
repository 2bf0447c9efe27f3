"""Settings from flags and RANDOM_STREAM_* variables; invalid ones fail with one clear line."""

import socket
import subprocess
import sys

import pytest
from conftest import ROOT, free_port

from randstream.config import ConfigError, Settings, load


def test_defaults_follow_the_design():
    s = load([], {})
    assert (s.host, s.port, s.interval, s.min, s.max) == ("127.0.0.1", 5000, 1.0, 0, 100)
    assert s.seed is None and s.db is None and s.message_queue is None
    assert s.async_mode == "eventlet" and s.cors_origins == ()


def test_environment_sets_and_flags_win():
    env = {"RANDOM_STREAM_INTERVAL": "0.5", "RANDOM_STREAM_MAX": "10", "RANDOM_STREAM_PORT": "6000"}
    s = load(["--port", "7000"], env)
    assert (s.interval, s.max, s.port) == (0.5, 10, 7000)


def test_tier_retention_in_days_from_flags_or_environment():
    assert load([], {}).tier_keep() == {60: 90 * 86_400, 3600: 730 * 86_400}
    s = load(["--hour-tier-days", "3650"], {"RANDOM_STREAM_MINUTE_TIER_DAYS": "30"})
    assert (s.minute_tier_days, s.hour_tier_days) == (30, 3650)
    assert s.tier_keep() == {60: 30 * 86_400, 3600: 3650 * 86_400}


def test_cors_origins_are_a_comma_separated_list():
    s = load(["--cors-origins", "https://a.example, https://b.example/"], {})
    assert s.cors_origins == ("https://a.example", "https://b.example")


INVALID = [
    (["--interval", "0"], "--interval must be between"),
    (["--interval", "-1"], "--interval must be between"),
    (["--interval", "soon"], "--interval must be a number"),
    (["--min", "10", "--max", "5"], "--min must not exceed --max"),
    (["--max", "1e3"], "--max must be a whole number"),
    (["--port", "70000"], "--port must be between 0 and 65535"),
    (["--port", "http"], "--port must be a whole number"),
    (["--history", "0"], "--history must be between"),
    (["--seed", "x"], "--seed must be a whole number"),
    (["--message-queue", "amqp://x"], "--message-queue must be a URL like redis://"),
    (["--message-queue", "redis://127.0.0.1:abc/0"], "--message-queue must be a URL like"),
    (["--message-queue", "redis://127.0.0.1:6379/x"], "--message-queue must be a URL like"),
    (["--cors-origins", "example.com"], "--cors-origins takes origins"),
    (["--async-mode", "asyncio"], "--async-mode must be one of"),
    (["--max-connections", "0"], "--max-connections must be between"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--minute-tier-days", "0.5"], "--minute-tier-days must be between 1 and 3650"),
    (["--minute-tier-days", "nan"], "--minute-tier-days must be between 1 and 3650"),
    (["--minute-tier-days", "week"], "--minute-tier-days must be a number"),
    (["--minute-tier-days", "1000"], "--hour-tier-days must be between --minute-tier-days"),
    (["--hour-tier-days", "40000"], "--hour-tier-days must be between"),
]


@pytest.mark.parametrize("argv, message", INVALID)
def test_invalid_settings_name_the_flag(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load(argv, {})


def test_invalid_environment_names_the_variable():
    with pytest.raises(ConfigError, match="RANDOM_STREAM_INTERVAL must be a number"):
        load([], {"RANDOM_STREAM_INTERVAL": "fast"})


def test_settings_validate_when_built_directly():
    with pytest.raises(ConfigError):
        Settings(interval=0)


def run_cli(*args, timeout=30):
    return subprocess.run(
        [sys.executable, str(ROOT / "random_stream.py"), *args], cwd=ROOT, capture_output=True,
        text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def assert_one_clear_line(result, message):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("random_stream: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("argv, message", [case for case in INVALID if case[0][0] != "--seed"][:8])
def test_cli_refuses_invalid_flags_before_starting(argv, message):
    assert_one_clear_line(run_cli("--port", str(free_port()), *argv), message)


def test_cli_refuses_invalid_environment():
    result = subprocess.run(
        [sys.executable, str(ROOT / "random_stream.py")], cwd=ROOT, capture_output=True, text=True,
        timeout=30, env={"RANDOM_STREAM_MIN": "50", "RANDOM_STREAM_MAX": "5", "PATH": "/usr/bin"},
    )
    assert_one_clear_line(result, "--min must not exceed --max")


def test_cli_refuses_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--port", str(port), "--db", ":memory:")
    assert_one_clear_line(result, f"--port {port} is already in use")


def test_cli_refuses_a_port_held_with_so_reuseport():
    # eventlet.listen() sets SO_REUSEPORT; a second instance must still not share the port.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--port", str(port), "--db", ":memory:")
    assert_one_clear_line(result, "already in use")


def test_cli_refuses_a_db_in_a_missing_folder(tmp_path):
    result = run_cli("--port", str(free_port()), "--db", str(tmp_path / "nope" / "x.sqlite3"))
    assert_one_clear_line(result, "does not exist")


def test_cli_refuses_a_db_that_is_not_a_database(tmp_path):
    bogus = tmp_path / "x.sqlite3"
    bogus.write_text("this is not sqlite " * 100)
    result = run_cli("--port", str(free_port()), "--db", str(bogus))
    assert_one_clear_line(result, "x.sqlite3")


def test_help_lists_every_flag():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--interval", "--min", "--max", "--seed", "--history",
                 "--db", "--message-queue", "--cors-origins", "--async-mode", "--max-connections"):
        assert flag in result.stdout
