"""Redis store: the shared history and statistics of a scaled-out stream.

Keys (prefix `random_stream:`, one stream per Redis database):
  readings  a Redis stream, entry id `<seq>-0`, fields v (value: an int, or a float of a
            pull source) and t (ts); capped
            at --retention with MAXLEN ~ (approximate trimming, cheap)
  seq       the highest seq ever handed out (a high-water mark, never lowered)
  stats     JSON of the stats state as of reading `seq` (the "seq" field says which); its
            "kind" is the source's (none: random), checked at start like the range
  lease     the token of the process that ticks (see lease.py), with a TTL
  stream    the stream's id (16 hex digits), made by the first process on an empty
            database; a Redis that restarted empty gets it back with the next reading
            stored, like the seq high-water mark
  live      not a key: the Pub/Sub channel each stored reading is published on, by the
            same script that stores it (subscription.py hears it in every process)
  minutes, hours, tiers
            the rollup tiers for /api/series, kept by the same script (redis_tiers.py)
  viewers   each process's viewers and when it last reported them (redis_presence.py)
"""

from __future__ import annotations

import json
import logging
from typing import NamedTuple
from urllib.parse import urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import redis_tiers, series
from .history import Reading, StoreError, new_stream_id
from .lease import Lease

log = logging.getLogger(__name__)

PREFIX = "random_stream:"
CONNECT_TIMEOUT = 2.0  # seconds; a Redis that does not answer is reported, not waited for
COMMAND_TIMEOUT = 2.0

# KEYS: lease, seq, readings, stats, stream, minutes, hours, tiers.  ARGV: token, ttl ms,
# seq, value, ts, stats json, retention, channel, the reading as JSON, the stream id, and
# the seconds each tier keeps: the tiers are kept in the same step, behind the same fence.
# The fence: only the lease holder writes, only with a seq above every seq handed out, and
# the write renews the lease. The seq goes in as a string so Lua never reformats it. A
# reading is published if and only if it is stored, in the order of the stores: a deposed
# leader can publish nothing. (The JSON is made in Python: Lua's cjson would round floats.)
APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return redis.error_reply('FENCED lease not held')
end
local top = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[3]) <= top then
    return redis.error_reply('FENCED seq ' .. ARGV[3] .. ' is not above ' .. top)
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], ARGV[3] .. '-0', 'v', ARGV[4], 't', ARGV[5])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[4], ARGV[6])
redis.call('SET', KEYS[5], ARGV[10], 'NX')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
""" + redis_tiers.APPEND_TIERS + """
redis.call('PUBLISH', ARGV[8], ARGV[9])
return top
"""


class Fenced(StoreError):
    """This process does not hold the lease (any more): the reading was not stored."""


class Keys(NamedTuple):
    lease: str
    seq: str
    readings: str
    stats: str
    stream: str
    live: str  # the channel of readings (not a key: open_redis_store adds the database)
    minutes: str
    hours: str
    tiers: str
    viewers: str

    @classmethod
    def with_prefix(cls, prefix: str = PREFIX) -> Keys:
        return cls(*(prefix + name for name in cls._fields))


def location(url: str) -> str:
    """HOST:PORT/DB of a redis:// URL, without any password, for messages."""
    parts = urlparse(url)
    db = parts.path.lstrip("/") or "0"
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"


def connect(url: str, **options) -> redis.Redis:
    """A client that fails fast (one retry for a connection Redis dropped, no backoff)."""
    options = {
        "socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": COMMAND_TIMEOUT,
        "socket_keepalive": True, "retry": Retry(NoBackoff(), 1), **options,
    }
    return redis.Redis.from_url(url, **options)


def message(reading: Reading) -> str:
    """A reading as it goes out on the channel: JSON, floats exact (Python's repr)."""
    return json.dumps(reading.to_dict(), separators=(",", ":"))


def _reading(entry) -> Reading:
    entry_id, fields = entry
    seq = int(entry_id.split(b"-", 1)[0])
    return Reading(seq, redis_tiers.number(fields[b"v"]), float(fields[b"t"]))


class RedisStore:
    """Implements the Store protocol on Redis; writes are fenced by the leader lease."""

    def __init__(
        self, client: redis.Redis, lease: Lease, retention: int, keys: Keys, where: str,
        keep: dict[int, float] | None = None,
    ) -> None:
        self.client = client
        self.lease = lease
        self.retention = retention
        self.keys = keys
        self.where = where
        self.keep = keep or {series.MINUTE: 90 * series.DAY, series.HOUR: 730 * series.DAY}
        self._append = client.register_script(APPEND)
        self._keep_args = redis_tiers.append_args(self.keep)
        self._scripts = {"series": client.register_script(redis_tiers.SERIES),
                         "span": client.register_script(redis_tiers.SPAN)}
        self.stream_id = self._stream_id()
        try:
            redis_tiers.build(client, keys, where)
        except redis.RedisError as exc:
            raise self._error(exc) from None

    def _stream_id(self) -> str:
        """The cluster's stream id: the one in Redis, or this process's new one if none is."""
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.set(self.keys.stream, new_stream_id(), nx=True)
                pipe.get(self.keys.stream)
                _, raw = pipe.execute()
        except redis.RedisError as exc:
            raise self._error(exc) from None
        return raw.decode()

    def _error(self, exc: redis.RedisError) -> StoreError:
        if isinstance(exc, redis.ResponseError) and str(exc).startswith("FENCED"):
            return Fenced(str(exc)[len("FENCED "):])
        return StoreError(f"redis {self.where}: {exc}")

    def latest(self, n: int) -> list[Reading]:
        try:
            entries = self.client.xrevrange(self.keys.readings, count=n)
        except redis.RedisError as exc:
            raise self._error(exc) from None
        return [_reading(e) for e in reversed(entries)]

    def after(self, seq: int, limit: int) -> list[Reading]:
        try:
            entries = self.client.xrange(self.keys.readings, min=f"{seq + 1}-0", count=limit)
        except redis.RedisError as exc:
            raise self._error(exc) from None
        return [_reading(e) for e in entries]

    def last_seq(self) -> int:
        try:
            raw = self.client.get(self.keys.seq)
        except redis.RedisError as exc:
            raise self._error(exc) from None
        return int(raw) if raw is not None else 0

    def head(self) -> tuple[int, dict | None]:
        """The seq the stats are at, and the stats state (None if there are none)."""
        try:
            raw = self.client.get(self.keys.stats)
        except redis.RedisError as exc:
            raise self._error(exc) from None
        if raw is None:
            return 0, None
        state = json.loads(raw)
        return state.pop("seq"), state

    def stats_state(self) -> dict | None:
        return self.head()[1]

    def catch_up(self, after: int, limit: int) -> tuple[list[Reading], int, dict | None]:
        """Readings after `after` (the newest `limit` if more are missing), and the stats
        with the seq they are at, read in one transaction so they match the readings."""
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.xrange(self.keys.readings, min=f"{after + 1}-0", count=limit + 1)
                pipe.get(self.keys.stats)
                entries, raw = pipe.execute()
            if len(entries) > limit:  # far behind: only the newest readings matter
                with self.client.pipeline(transaction=True) as pipe:
                    pipe.xrevrange(self.keys.readings, count=limit)
                    pipe.get(self.keys.stats)
                    entries, raw = pipe.execute()
                entries.reverse()
        except redis.RedisError as exc:
            raise self._error(exc) from None
        readings = [_reading(e) for e in entries]
        if raw is None:
            return readings, 0, None
        state = json.loads(raw)
        return readings, state.pop("seq"), state

    def append(self, reading: Reading, stats_state: dict) -> None:
        """Store the reading and the stats, then publish the reading on the channel, if and
        only if this process holds the lease."""
        stats = json.dumps({"seq": reading.seq, **stats_state}, separators=(",", ":"))
        keys = self.keys
        try:
            self._append(
                keys=[keys.lease, keys.seq, keys.readings, keys.stats, keys.stream,
                      keys.minutes, keys.hours, keys.tiers],
                args=[self.lease.token, self.lease.ttl_ms, str(reading.seq), reading.value,
                      repr(reading.ts), stats, self.retention, keys.live, message(reading),
                      self.stream_id, *self._keep_args],
            )
        except redis.RedisError as exc:
            raise self._error(exc) from None

    def series(self, frm: float, to: float, points: int, interval: float) -> dict:
        """The /api/series answer (series.py) from the tiers in Redis."""
        try:
            return series.answer(self._reader(), frm, to, points, interval)
        except redis.RedisError as exc:
            raise self._error(exc) from None

    def seq_span(self, frm: float, to: float) -> tuple[int, int] | None:
        """The seqs to read for the readings with frm <= ts < to (None: there are none)."""
        try:
            reader = self._reader()
            if reader.since(series.MINUTE) > frm:  # their buckets are gone: from the oldest
                return (reader.oldest_seq() or 1, self.last_seq())
            return reader.seq_span(frm, to)
        except redis.RedisError as exc:
            raise self._error(exc) from None

    def _reader(self) -> redis_tiers.RedisReader:
        return redis_tiers.RedisReader(self.client, self.keys, self._scripts)

    def close(self) -> None:
        self.client.close()


def open_redis_store(url: str, retention: int, ttl: float, keys: Keys | None = None,
                     keep: dict[int, float] | None = None) -> RedisStore:
    """Connect and check that Redis answers; StoreError (one line) if it does not."""
    keys = keys or Keys.with_prefix()
    where = location(url)
    try:
        client = connect(url)
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise StoreError(f"--message-queue: cannot reach Redis at {where} ({exc})") from None
    # Keys live in one database, Pub/Sub channels are the whole server's: a stream in /1
    # beside one in /0 must not hear the other's readings.
    keys = keys._replace(live=f"{keys.live}:{client.connection_pool.connection_kwargs.get('db', 0)}")
    return RedisStore(client, Lease(client, keys.lease, keys.seq, ttl), retention, keys, where,
                      keep)
