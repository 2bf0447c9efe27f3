"""Redis's rollup tiers: per-minute and per-hour count, min, max and sum, in the fenced write.

Each tier is a sorted set (`random_stream:minutes`, `random_stream:hours`), one member per
bucket, scored by the bucket's start t; a member is a row packed with MessagePack (Redis's
Lua has cmsgpack: unpacking is 5x faster than parsing text, so a week's ~10,000 rows are
summed in ~5 ms):

    t, count, min, max, sum, lowest seq, highest seq, min as written, max as written

(min and max as written: a float 3.0 stays 3.0, which the packed number would not). The
minute of the newest reading is in fields of the hash `random_stream:tiers` (`60:t`,
`60:n`, ..., `60:first`), its hour's closed minutes in the field `open:3600` (a row), until
readings move on (APPEND_TIERS); then they go into the sorted sets. The script that stores
a reading (redis_store.APPEND, behind the lease's fence) folds it into the tiers in the
same step, so they hold exactly the readings stored, whichever process led, and a kill -9
loses nothing of them. The hash also holds `since:<tier>` (the tier is whole for ts >= it:
older members are trimmed past --minute-tier-days / --hour-tier-days) and the one-time
build's progress (build()). Answers are read by scripts too (SERIES, SPAN).
"""

from __future__ import annotations

import logging
import time

import redis

from .series import MINUTE, TIERS, edge, index

log = logging.getLogger(__name__)

# Lua helpers: merge() two rows of one bucket into one; put() a row into a tier (merged
# with the row there); bucket(ts, width) is series.index() * width, by the same float
# operations.
FOLD = """
local pack, unpack_row = cmsgpack.pack, cmsgpack.unpack
local function merge(a, b)
    local t, n, lo, hi, sum, first, last, los, his = unpack_row(a)
    local _, n2, lo2, hi2, sum2, first2, last2, los2, his2 = unpack_row(b)
    if lo2 < lo then lo, los = lo2, los2 end
    if hi2 > hi then hi, his = hi2, his2 end
    return pack(t, n + n2, lo, hi, sum + sum2, math.min(first, first2), math.max(last, last2),
                los, his)
end
local function put(key, t, row)
    local old = redis.call('ZRANGEBYSCORE', key, t, t)
    if old[1] then
        redis.call('ZREM', key, old[1])
        row = merge(old[1], row)
    end
    redis.call('ZADD', key, t, row)
end
local function bucket(ts, width)
    local k = math.floor(ts / width)
    if k * width > ts then k = k - 1 elseif (k + 1) * width <= ts then k = k + 1 end
    return k * width
end
local function open_rows(tiers, width, last)
    local rows = {}
    local o = redis.call('HMGET', tiers, '60:t', '60:n', '60:lo', '60:hi', '60:sum', '60:first')
    if o[1] then
        rows[1] = pack(tonumber(o[1]), tonumber(o[2]), tonumber(o[3]), tonumber(o[4]),
                       tonumber(o[5]), tonumber(o[6]), tonumber(last), o[3], o[4])
    end
    if width == 3600 then rows[#rows + 1] = redis.call('HGET', tiers, 'open:3600') or nil end
    return rows
end
"""

# The part of redis_store.APPEND that keeps the tiers, after the reading is stored (`top`:
# the seq before it). KEYS[6..8]: minutes, hours, tiers.  ARGV[11], ARGV[12]: seconds each
# tier keeps. A reading goes into the open minute only: fields of tiers (start, count,
# min, max, sum, first seq; its highest seq is the newest stored), one HMGET and one HSET
# (Redis writes a Lua number with 17 digits). When a reading lands in another minute, the
# open one goes into the sorted set of minutes and into the open hour (tiers's
# `open:3600`, a row), which goes into the sorted set of hours when a minute of another
# hour closes. So the hour costs nothing per reading, and the minute no sorted-set member
# rewritten (that doubled the script's time). The helpers (FOLD) are made only when a
# minute closes. Trimming every 64th reading: a ZREMRANGEBYSCORE that finds nothing is
# cheap, not free.
APPEND_TIERS = """
local ts, v, seq = tonumber(ARGV[5]), ARGV[4], ARGV[3]
local x = tonumber(v)
local o = redis.call('HMGET', KEYS[8], '60:t', '60:n', '60:lo', '60:hi', '60:sum', '60:first')
local t = tonumber(o[1])
if t and ts >= t and ts < t + 60 then
    if x < tonumber(o[3]) then
        redis.call('HSET', KEYS[8], '60:n', o[2] + 1, '60:sum', o[5] + x, '60:lo', v)
    elseif x > tonumber(o[4]) then
        redis.call('HSET', KEYS[8], '60:n', o[2] + 1, '60:sum', o[5] + x, '60:hi', v)
    else
        redis.call('HSET', KEYS[8], '60:n', o[2] + 1, '60:sum', o[5] + x)
    end
else
""" + FOLD + """
    if t then
        local n, lo, hi, sum, first = tonumber(o[2]), tonumber(o[3]), tonumber(o[4]),
            tonumber(o[5]), tonumber(o[6])
        put(KEYS[6], t, pack(t, n, lo, hi, sum, first, top, o[3], o[4]))
        local h = bucket(t, 3600)
        local row = pack(h, n, lo, hi, sum, first, top, o[3], o[4])
        local open = redis.call('HGET', KEYS[8], 'open:3600')
        if open then
            local ht = unpack_row(open)
            if ht == h then
                row = merge(open, row)
            else
                put(KEYS[7], ht, open)
            end
        end
        redis.call('HSET', KEYS[8], 'open:3600', row)
    end
    redis.call('HSET', KEYS[8], '60:t', bucket(ts, 60), '60:n', 1, '60:lo', v, '60:hi', v,
               '60:sum', v, '60:first', seq)
end
if tonumber(seq) % 64 == 0 then
    for i, width in ipairs({60, 3600}) do
        local cut = math.floor((ts - tonumber(ARGV[10 + i])) / width) * width  -- an edge
        if redis.call('ZREMRANGEBYSCORE', KEYS[5 + i], '-inf', '(' .. cut) > 0 then
            local field = 'since:' .. width
            if cut > tonumber(redis.call('HGET', KEYS[8], field) or '-inf') then
                redis.call('HSET', KEYS[8], field, cut)
            end
        end
    end
end
"""

# KEYS: a tier, tiers.  ARGV: from t, to t (exclusive), step (a whole multiple of the
# tier), the tier's width. Returns k, count, min, max, sum per bucket k of the step, flat,
# as strings (Redis would truncate Lua numbers to integers); the open minute's, and in
# the hour tier the open hour's, last, their k maybe again (series.buckets() adds up).
SERIES = FOLD + """
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '(' .. ARGV[2])
local a, b, step = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for _, open in ipairs(open_rows(KEYS[2], tonumber(ARGV[4]), 0)) do
    local t = unpack_row(open)
    if t >= a and t < b then rows[#rows + 1] = open end
end
local out = {}
local ck, cn, clo, chi, cs, clos, chis
local function emit()
    if ck then
        out[#out + 1] = string.format('%d', ck)
        out[#out + 1] = string.format('%d', cn)
        out[#out + 1] = clos
        out[#out + 1] = chis
        out[#out + 1] = string.format('%.17g', cs)
    end
end
for _, row in ipairs(rows) do
    local t, n, lo, hi, sum, _, _, los, his = unpack_row(row)
    local k = math.floor(t / step)
    if k ~= ck then
        emit()
        ck, cn, clo, chi, cs, clos, chis = k, n, lo, hi, sum, los, his
    else
        cn = cn + n
        cs = cs + sum
        if lo < clo then clo, clos = lo, los end
        if hi > chi then chi, chis = hi, his end
    end
end
emit()
return out
"""

# KEYS: minutes, tiers, seq.  ARGV: from, to.  The lowest and highest seq of the per-minute
# buckets that can hold readings with from <= ts < to (the open one too), or nothing.
SPAN = FOLD + """
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '(' .. ARGV[2])
for _, open in ipairs(open_rows(KEYS[2], 60, redis.call('GET', KEYS[3]) or '0')) do
    local t = unpack_row(open)
    if t > tonumber(ARGV[1]) and t < tonumber(ARGV[2]) then rows[#rows + 1] = open end
end
local lo, hi
for _, row in ipairs(rows) do
    local _, _, _, _, _, a, b = unpack_row(row)
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
-- Summed here per bucket first: one sorted-set write per bucket, not per reading.
local sums = {{}, {}}
for _, entry in ipairs(entries) do
    local seq = tonumber(string.match(entry[1], '^(%d+)'))
    local f = entry[2]
    local v, ts
    for i = 1, #f, 2 do
        if f[i] == 'v' then v = f[i + 1] elseif f[i] == 't' then ts = tonumber(f[i + 1]) end
    end
    local x = tonumber(v)
    for i, width in ipairs({60, 3600}) do
        local t = bucket(ts, width)
        local b = sums[i][t]
        if not b then
            sums[i][t] = {t, 1, x, x, x, seq, seq, v, v}
        else
            b[2] = b[2] + 1
            if x < b[3] then b[3], b[8] = x, v end
            if x > b[4] then b[4], b[9] = x, v end
            b[5] = b[5] + x
            b[7] = seq
        end
    end
end
for i, key in ipairs({KEYS[3], KEYS[4]}) do
    for t, b in pairs(sums[i]) do put(key, t, pack(unpack(b))) end
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


def append_args(keep: dict[int, float]) -> list:
    """ARGV[11..12] of APPEND: the seconds each tier keeps."""
    return [repr(float(keep[60])), repr(float(keep[3600]))]


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
        span = self.scripts["span"](keys=[self.keys.minutes, self.keys.tiers, self.keys.seq],
                                    args=[repr(frm - MINUTE), repr(to)])
        return (int(span[0]), int(span[1])) if span else None

    def oldest_seq(self) -> int | None:
        first = self.client.xrange(self.keys.readings, count=1)
        return int(first[0][0].split(b"-", 1)[0]) if first else None

    def rollups(self, tier: int, step: float, first: int, last: int) -> list[tuple]:
        key = self.keys.minutes if tier == MINUTE else self.keys.hours
        a, b = int(edge(first, step)), int(edge(last, step))
        flat = self.scripts["series"](keys=[key, self.keys.tiers], args=[a, b, int(step), tier])
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
