"""Presence scaled out: every process's viewers in one Redis hash, summed by one script.

Key (beside redis_store.py's): `random_stream:viewers`, a hash from each process's token
(its lease token: unique per start) to `<viewers> <ms>`, `ms` being when it last reported
by Redis' own clock (TIME), so the processes' clocks never matter. Each period every
process runs REPORT once: one round trip writes its count, drops the processes silent for
longer than the drop time (presence.drop_after: killed, hung, cut off from Redis) and
returns the total and the processes counted. A process that stops cleanly deletes its
field at once (leave). The hash expires after the drop time, so a cluster that is gone
leaves nothing behind.
"""

from __future__ import annotations

import redis

from .redis_store import RedisStore

# KEYS: viewers.  ARGV: this process's token, its viewers, the drop time in ms.
# Redis 5+ replicates a script's effects, so TIME may come before the writes.
REPORT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local drop = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. string.format('%d', now))
local total, processes = 0, 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
    local count, seen = string.match(entries[i + 1], '^(%d+) (%d+)$')
    if count == nil or now - tonumber(seen) > drop then
        redis.call('HDEL', KEYS[1], entries[i])
    else
        total = total + tonumber(count)
        processes = processes + 1
    end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {total, processes}
"""


class RedisTally:
    """This process's report to the cluster's tally of viewers (presence.Tally).

    Redis trouble goes to the RedisLink (one log line an outage, with the store's); the
    report then answers None and Presence goes on from the last known total.
    """

    def __init__(self, store: RedisStore, link, drop_after: float) -> None:
        self.client = store.client
        self.key = store.keys.viewers
        self.token = store.lease.token
        self.link = link  # scaleout.RedisLink
        self.drop_ms = max(1, round(drop_after * 1000))
        self._report = self.client.register_script(REPORT)

    def report(self, here: int) -> tuple[int, int] | None:
        try:
            total, processes = self._report(keys=[self.key], args=[self.token, here, self.drop_ms])
        except (redis.RedisError, OSError) as exc:
            self.link.trouble("presence", exc)
            return None
        self.link.fine("presence")
        return int(total), int(processes)

    def leave(self) -> None:
        try:
            self.client.hdel(self.key, self.token)
        except (redis.RedisError, OSError):
            pass  # dropped after the drop time instead
