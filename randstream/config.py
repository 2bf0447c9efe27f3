"""Settings: one dataclass, built from flags and RANDOM_STREAM_* environment variables."""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, field
from urllib.parse import urlparse

ASYNC_MODES = ("eventlet", "gevent", "threading")
FAST_PATHS = ("auto", "off")  # off: the libraries' own delivery path only (randstream/transport)
ENV_PREFIX = "RANDOM_STREAM_"


class ConfigError(ValueError):
    """An invalid setting; the message names the flag and what is allowed."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 5000
    interval: float = 1.0
    min: int = 0
    max: int = 100
    seed: int | None = None
    history: int = 900  # readings a new client gets: 15 minutes at 1 Hz
    retention: int = 1_000_000  # readings kept in the store (about 11 days at 1 Hz)
    minute_tier_days: float = 90.0  # days of per-minute rollups kept (/api/series)
    hour_tier_days: float = 730.0  # days of per-hour rollups kept: about 2 years
    db: str | None = None  # None: instance/random_stream.sqlite3; ":memory:": no persistence
    message_queue: str | None = None
    cors_origins: tuple[str, ...] = field(default=())
    async_mode: str = "eventlet"
    max_connections: int = 10_000
    max_per_address: int = 100  # sessions one client address may hold (and ~1/10 of it per second)
    trusted_proxies: tuple[str, ...] = field(default=())  # peers whose X-Forwarded-For is believed
    ping_interval: float = 25.0  # seconds between Engine.IO pings to each client
    ping_timeout: float = 20.0  # seconds a client may take to answer before it is dropped
    fast_path: str = "auto"
    log_level: str = "INFO"
    source: str = "random"  # random, stdin, http, or module:callable / path.py:callable
    ingest_token: str | None = field(default=None, repr=False)  # --source http only
    # Private dashboards (access.py): the tokens that open the page, the API and the stream;
    # several for rotation. None: public, as without the flag.
    access_token: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        validate(self)

    def tier_keep(self) -> dict[int, float]:
        """Seconds of rows each rollup tier keeps, by its width in seconds."""
        return {60: self.minute_tier_days * 86_400, 3600: self.hour_tier_days * 86_400}


def validate(s: Settings) -> None:
    """Raise ConfigError for the first invalid setting."""
    if not s.host:
        raise ConfigError("--host must not be empty")
    if not 0 <= s.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535 (got {s.port})")
    if not 0.01 <= s.interval <= 3600:  # also false for NaN
        raise ConfigError(f"--interval must be between 0.01 and 3600 seconds (got {s.interval})")
    if s.min > s.max:
        raise ConfigError(f"--min must not exceed --max (got min={s.min}, max={s.max})")
    if s.max - s.min > 10_000:
        raise ConfigError(f"--max minus --min must be at most 10000 (got {s.max - s.min})")
    if not 1 <= s.history <= 100_000:
        raise ConfigError(f"--history must be between 1 and 100000 readings (got {s.history})")
    if not s.history <= s.retention <= 100_000_000:
        raise ConfigError(
            f"--retention must be between --history ({s.history}) and 100000000 (got {s.retention})"
        )
    # 129,600 per-minute and 17,520 per-hour rows at the defaults: a few MB, bounded.
    if not 1 <= s.minute_tier_days <= 3650:
        raise ConfigError(
            f"--minute-tier-days must be between 1 and 3650 (got {s.minute_tier_days})")
    if not s.minute_tier_days <= s.hour_tier_days <= 36500:
        raise ConfigError(f"--hour-tier-days must be between --minute-tier-days "
                          f"({s.minute_tier_days:g}) and 36500 (got {s.hour_tier_days})")
    if s.message_queue is not None:
        check_redis_url(s.message_queue)
    for origin in s.cors_origins:
        parts = urlparse(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path):
            raise ConfigError(
                f"--cors-origins takes origins like https://example.com (got {origin!r})"
            )
    if s.async_mode not in ASYNC_MODES:
        raise ConfigError(f"--async-mode must be one of {', '.join(ASYNC_MODES)} (got {s.async_mode!r})")
    if not 1 <= s.max_connections <= 1_000_000:
        raise ConfigError(
            f"--max-connections must be between 1 and 1000000 (got {s.max_connections})"
        )
    if not 1 <= s.max_per_address <= 1_000_000:
        raise ConfigError(
            f"--max-per-address must be between 1 and 1000000 (got {s.max_per_address})"
        )
    for proxy in s.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"--trusted-proxies takes addresses or networks like 10.0.0.1 or 10.0.0.0/8 "
                f"(got {proxy!r})"
            ) from None
    if not 1 <= s.ping_interval <= 3600:
        raise ConfigError(f"--ping-interval must be between 1 and 3600 seconds (got {s.ping_interval})")
    if s.ping_interval != int(s.ping_interval):  # engine.io advertises int(interval) seconds
        raise ConfigError(f"--ping-interval must be a whole number of seconds (got {s.ping_interval})")
    if not 1 <= s.ping_timeout <= 3600:
        raise ConfigError(f"--ping-timeout must be between 1 and 3600 seconds (got {s.ping_timeout})")
    if s.fast_path not in FAST_PATHS:
        raise ConfigError(f"--fast-path must be auto or off (got {s.fast_path!r})")
    check_source(s)
    check_access_tokens(s)
    if s.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"--log-level must be DEBUG, INFO, WARNING or ERROR (got {s.log_level!r})")


MIN_TOKEN = 16


def check_source(s: Settings) -> None:
    if s.source not in ("random", "stdin", "http") and ":" not in s.source:
        raise ConfigError(
            f"--source must be random, stdin, http or module:callable (got {s.source!r})"
        )
    if s.source == "http" and (s.ingest_token is None or len(s.ingest_token) < MIN_TOKEN):
        raise ConfigError(
            f"--source http needs --ingest-token (or RANDOM_STREAM_INGEST_TOKEN) of at least "
            f"{MIN_TOKEN} characters"
        )
    if s.source in ("stdin", "http") and s.message_queue is not None:
        # A pull callable is called by the lease holder alone; a pushed value arrives at
        # whichever process it was sent to, and no single process could order them all.
        raise ConfigError(
            f"--source {s.source} does not go with --message-queue: each process would "
            "receive its own pushes, but a scaled-out stream's readings are drawn by the one "
            "lease holder; run a push source in one process, or scale out a pull source "
            "(module:callable)"
        )


MAX_TOKEN = 512


def check_access_tokens(s: Settings) -> None:
    """Each token long enough to resist guessing, and sendable in a header, a cookie-less URL
    and a form alike; never the ingest token (a viewer could post readings). The messages
    say which token is wrong by its place, never by its text."""
    for place, token in enumerate(s.access_token, 1):
        if not (MIN_TOKEN <= len(token) <= MAX_TOKEN and token.isascii() and token.isprintable()
                and " " not in token):
            raise ConfigError(
                f"--access-token takes comma-separated tokens of {MIN_TOKEN} to {MAX_TOKEN} "
                f"printable ASCII characters without spaces (token {place} is not one)")
        if token == s.ingest_token:
            raise ConfigError(f"--access-token must differ from --ingest-token (token {place} is "
                              "the same: whoever may watch could post readings)")


def check_redis_url(url: str) -> None:
    """redis[s]://[user:password@]host[:port][/db]: a bad port or db is an error, not db 0."""
    problem = f"--message-queue must be a URL like redis://127.0.0.1:6379/0 (got {url!r})"
    parts = urlparse(url)
    try:
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(problem) from None
    db = parts.path.strip("/")
    if parts.scheme not in ("redis", "rediss") or not parts.hostname or (db and not db.isdigit()):
        raise ConfigError(problem)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line instead of usage + message
        raise ConfigError(message)


def _parser() -> _Parser:
    # prog: argparse's own (the script or command run): random_stream.py, random-stream
    p = _Parser(description="Stream random numbers to a live dashboard.")
    add = p.add_argument
    add("--host", help="address to listen on (default 127.0.0.1)")
    add("--port", help="port to listen on (default 5000)")
    add("--interval", help="seconds between readings (default 1.0)")
    add("--min", help="smallest value drawn (default 0)")
    add("--max", help="largest value drawn (default 100)")
    add("--seed", help="seed for a reproducible stream (default: random)")
    add("--history", help="readings sent to a new client (default 900)")
    add("--retention", help="readings kept in the store (default 1000000)")
    add("--minute-tier-days", help="days of per-minute rollups kept for long ranges (default 90)")
    add("--hour-tier-days", help="days of per-hour rollups kept (default 730)")
    add("--db", help="SQLite path, or :memory: for no persistence (default instance/random_stream.sqlite3; "
                     "installed: $XDG_DATA_HOME/random-stream/, else ~/.local/share/random-stream/)")
    add("--message-queue", help="redis://HOST:PORT/DB to share one stream between processes")
    add("--cors-origins", help="comma-separated origins allowed besides the page's own")
    add("--async-mode", help="eventlet (default), gevent or threading")
    add("--max-connections", help="concurrent connections per process (default 10000)")
    add("--max-per-address", help="connections one client address may hold (default 100)")
    add("--trusted-proxies",
        help="comma-separated proxy addresses or networks whose X-Forwarded-For is believed "
             "(default none)")
    add("--ping-interval", help="seconds between pings to each client (default 25)")
    add("--ping-timeout", help="seconds a client may take to answer a ping (default 20)")
    add("--fast-path", help="auto (default: checked at start) or off (the libraries' own path)")
    add("--log-level", help="DEBUG, INFO (default), WARNING or ERROR")
    add("--source", help="random (default), stdin, http, or module:callable / file.py:callable")
    add("--ingest-token", help="bearer token for POST /api/readings (--source http)")
    add("--access-token", help="token(s) that open the page, the API and the stream, "
                               "comma-separated for rotation (default none: public)")
    return p


_CONVERTERS = {
    "port": int, "interval": float, "min": int, "max": int, "seed": int,
    "history": int, "retention": int, "max_connections": int, "max_per_address": int,
    "minute_tier_days": float, "hour_tier_days": float,
    "ping_interval": float, "ping_timeout": float,
}


def _convert(name: str, raw: str, source: str):
    if name == "cors_origins":
        return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    if name == "trusted_proxies":
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    if name == "access_token":  # duplicates dropped, the order kept; "" is none: public
        tokens = tuple(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
        if raw and not tokens:
            raise ConfigError(f"{source} holds no token (got only commas and spaces)")
        return tokens
    if name == "log_level":
        return raw.upper()
    if name == "fast_path":
        return raw.lower()
    if name in ("db", "message_queue", "ingest_token") and raw == "":
        return None
    convert = _CONVERTERS.get(name)
    if convert is None:
        return raw
    try:
        return convert(raw)
    except ValueError:
        kind = "a number" if convert is float else "a whole number"
        raise ConfigError(f"{source} must be {kind} (got {raw!r})") from None


def load(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Settings from flags, then RANDOM_STREAM_* variables, then defaults; flags win."""
    environ = os.environ if environ is None else environ
    args = vars(_parser().parse_args(argv))
    values = {}
    for name, flag_value in args.items():
        env_name = ENV_PREFIX + name.upper()
        if flag_value is not None:
            values[name] = _convert(name, flag_value, "--" + name.replace("_", "-"))
        elif env_name in environ:
            values[name] = _convert(name, environ[env_name], env_name)
    return Settings(**values)
