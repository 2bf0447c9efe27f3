"""Redis's rollup tiers: per-minute and per-hour count, min, max and sum, in the fenced write.

Each tier is a sorted set (`random_stream:minutes`, `random_stream:hours`), one member per
bucket, scored by the bucket's start t:

    "<t> <count> <min> <max> <sum> <lowest seq> <highest seq>"

min and max as the reading's value was written (an int stays an int), the sum with 17
digits. The script that stores a reading (redis_store.APPEND, behind the lease's fence)
folds it into both tiers in the same step, so a tier holds exactly the readings stored,
whichever process led, and a kill -9 loses nothing of it. The hash `random_stream:tiers`
holds `since:<tier>` (the tier is whole for ts >= it: older members are trimmed past
--minute-tier-days / --hour-tier-days) and the one-time build's progress (build()).
Answers are read by scripts too (SERIES, SPAN): a week is ~10,000 members, summed in Redis
instead of sent.
"""

from __future__ import annotations

import logging
import time

import redis

from .history import Reading
from .series import MINUTE, TIERS, bucket_start, edge, index

log = logging.getLogger(__name__)

# Lua: fold(key, t, value, seq) puts one reading into the bucket of `key` that starts at t.
# bucket(ts, width) is series.index() * width, with the same float operations.
FOLD = """
local function fold(key, t, v, seq)
    local old = redis.call('ZRANGEBYSCORE', key, t, t)
    local row
    if old[1] then
        redis.call('ZREM', key, old[1])
        local n, lo, hi, sum, first = string.match(old[1], '^%S+ (%d+) (%S+) (%S+) (%S+) (%d+)')
        local x = tonumber(v)
        if x < tonumber(lo) then lo = v end
        if x > tonumber(hi) then hi = v end
        row = t .. ' ' .. (tonumber(n) + 1) .. ' ' .. lo .. ' ' .. hi .. ' '
            .. string.format('%.17g', tonumber(sum) + x) .. ' ' .. first .. ' ' .. seq
    else
        row = t .. ' 1 ' .. v .. ' ' .. v .. ' ' .. string.format('%.17g', tonumber(v)) .. ' '
            .. seq .. ' ' .. seq
    end
    redis.call('ZADD', key, t, row)
end
local function bucket(ts, width)
    local k = math.floor(ts / width)
    if k * width > ts then k = k - 1 elseif (k + 1) * width <= ts then k = k + 1 end
    return string.format('%d', k * width)
end
"""

# The part of redis_store.APPEND that keeps the tiers, after the reading is stored.
# KEYS[6..8]: minutes, hours, tiers.  ARGV[11..14]: minute t, hour t, minute cutoff, hour
# cutoff. Trimming every 64th reading: a ZREMRANGEBYSCORE that finds nothing is cheap,
# but not free.
APPEND_TIERS = """
fold(KEYS[6], ARGV[11], ARGV[4], ARGV[3])
fold(KEYS[7], ARGV[12], ARGV[4], ARGV[3])
if tonumber(ARGV[3]) % 64 == 0 then
    for i, cut in ipairs({{KEYS[6], ARGV[13], 'since:60'}, {KEYS[7], ARGV[14], 'since:3600'}}) do
        if redis.call('ZREMRANGEBYSCORE', cut[1], '-inf', '(' .. cut[2]) > 0 then
            local old = tonumber(redis.call('HGET', KEYS[8], cut[3]) or '-inf')
            if tonumber(cut[2]) > old then redis.call('HSET', KEYS[8], cut[3], cut[2]) end
        end
    end
end
"""

# KEYS: a tier.  ARGV: from t, to t (exclusive), step (a whole multiple of the tier).
# Returns k, count, min, max, sum per bucket k of the step, flat, as strings (Redis would
# truncate Lua numbers to integers).
SERIES = """
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '(' .. ARGV[2])
local step = tonumber(ARGV[3])
local out = {}
local ck, cn, clo, chi, cs
local function put()
    if ck then
        out[#out + 1] = string.format('%d', ck)
        out[#out + 1] = string.format('%d', cn)
        out[#out + 1] = clo
        out[#out + 1] = chi
        out[#out + 1] = string.format('%.17g', cs)
    end
end
for _, row in ipairs(rows) do
    local t, n, lo, hi, sum = string.match(row, '^(%d+) (%d+) (%S+) (%S+) (%S+)')
    local k = math.floor(tonumber(t) / step)
    if k ~= ck then
        put()
        ck, cn, clo, chi, cs = k, tonumber(n), lo, hi, tonumber(sum)
    else
        cn = cn + tonumber(n)
        if tonumber(lo) < tonumber(clo) then clo = lo end
        if tonumber(hi) > tonumber(chi) then chi = hi end
        cs = cs + tonumber(sum)
    end
end
put()
return out
"""

# KEYS: minutes.  ARGV: from, to.  The lowest and highest seq of the buckets that can hold
# readings with from <= ts < to, or nothing.
SPAN = """
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '(' .. ARGV[2])
local lo, hi
for _, row in ipairs(rows) do
    local a, b = string.match(row, '(%d+) (%d+)$')
    a, b = tonumber(a), tonumber(b)
    if not lo or a < lo then lo = a end
    if not hi or b > hi then hi = b end
end
if not lo then return {} end
return {string.format('%d', lo), string.format('%d', hi)}
"""

# The one-time build for a stream stored before tiers: KEYS readings, seq, minutes, hours,
# tiers; ARGV: how many readings per call. The first call notes where the appends that
# fold took over (`from`: the seq after the newest handed out; every process builds
# before it ticks); each call folds the next readings below it, atomically, so processes
# starting together share the work and fold nothing twice. Returns {seqs left (0: built),
# readings folded by this call}.
BUILD = FOLD + """
local from = tonumber(redis.call('HGET', KEYS[5], 'from') or '0')
if from == 0 then
    from = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
    redis.call('HSET', KEYS[5], 'from', from)
end
local done = tonumber(redis.call('HGET', KEYS[5], 'built') or '0')
if done >= from - 1 then return {0, 0} end
local entries = redis.call('XRANGE', KEYS[1], (done + 1) .. '-0', (from - 1) .. '-0',
                           'COUNT', ARGV[1])
for _, entry in ipairs(entries) do
    local seq = string.match(entry[1], '^(%d+)')
    local f = entry[2]
    local v, ts
    for i = 1, #f, 2 do
        if f[i] == 'v' then v = f[i + 1] elseif f[i] == 't' then ts = tonumber(f[i + 1]) end
    end
    fold(KEYS[3], bucket(ts, 60), v, seq)
    fold(KEYS[4], bucket(ts, 3600), v, seq)
end
if #entries < tonumber(ARGV[1]) then
    done = from - 1
else
    done = tonumber(string.match(entries[#entries][1], '^(%d+)'))
end
redis.call('HSET', KEYS[5], 'built', done)
return {from - 1 - done, #entries}
"""

BUILD_CHUNK = 5000  # readings per BUILD call: a few ms of Redis each


def append_args(reading: Reading, keep: dict[int, float]) -> list:
    """ARGV[11..14] of APPEND for `reading`: its buckets, and where each tier's trim cuts."""
    ts = reading.ts
    return [bucket_start(ts, 60), bucket_start(ts, 3600),
            bucket_start(ts - keep[60], 60), bucket_start(ts - keep[3600], 3600)]


def build(client: redis.Redis, keys, where: str) -> None:
    """Fold the readings stored before tiers into them, once (nothing to do on a new stream)."""
    script = client.register_script(BUILD)
    args = dict(keys=[keys.readings, keys.seq, keys.minutes, keys.hours, keys.tiers],
                args=[BUILD_CHUNK])
    started, left, folded = time.perf_counter(), 1, 0
    while left:
        left, more = script(**args)
        folded += more
    if folded:
        log.info("redis %s: rollup tiers built from %d readings stored before them, in %.2f s",
                 where, folded, time.perf_counter() - started)


class RedisReader:
    """series.TierReader on Redis: each read one command or script (atomic in itself)."""

    def __init__(self, client: redis.Redis, keys, scripts: dict) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self._since: dict[int, float] | None = None

    def since(self, tier: int) -> float:
        if self._since is None:  # read once per answer
            raw = self.client.hmget(self.keys.tiers, [f"since:{w}" for w in TIERS])
            self._since = {w: float(v) if v is not None else float("-inf")
                           for w, v in zip(TIERS, raw)}
        return self._since[tier]

    def seq_span(self, frm: float, to: float) -> tuple[int, int] | None:
        span = self.scripts["span"](keys=[self.keys.minutes], args=[repr(frm - MINUTE), repr(to)])
        return (int(span[0]), int(span[1])) if span else None

    def oldest_seq(self) -> int | None:
        first = self.client.xrange(self.keys.readings, count=1)
        return int(first[0][0].split(b"-", 1)[0]) if first else None

    def rollups(self, tier: int, step: float, first: int, last: int) -> list[tuple]:
        key = self.keys.minutes if tier == MINUTE else self.keys.hours
        a, b = int(edge(first, step)), int(edge(last, step))
        flat = self.scripts["series"](keys=[key], args=[a, b, int(step)])
        return [(int(flat[i]), int(flat[i + 1]), number(flat[i + 2]), number(flat[i + 3]),
                 float(flat[i + 4])) for i in range(0, len(flat), 5)]

    def raw(self, step: float, first: int, last: int, lo: int, hi: int) -> list[tuple]:
        a, b = edge(first, step), edge(last, step)
        out: dict[int, list] = {}
        for _entry, fields in self.client.xrange(self.keys.readings, min=f"{lo}-0",
                                                   max=f"{hi}-0"):
            ts = float(fields[b"t"])
            if not a <= ts < b:
                continue
            value = number(fields[b"v"])
            k = index(ts, step)
            row = out.get(k)
            if row is None:
                out[k] = [k, 1, value, value, float(value)]
            else:
                row[1] += 1
                row[2] = value if value < row[2] else row[2]
                row[3] = value if value > row[3] else row[3]
                row[4] += value
        return [tuple(row) for row in out.values()]


def number(raw: bytes) -> int | float:
    """A value as written: redis-py writes an int as str() and a float as repr(), so "3" is
    3, "3.0" stays a float, "-0.0" keeps its sign."""
    try:
        return int(raw)
    except ValueError:
        return float(raw)
