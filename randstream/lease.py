"""The leader lease: the one process that ticks holds a Redis key with its token and a TTL.

Every process calls `claim()` once per interval. The holder renews the TTL; when the
holder stops renewing (killed, hung, cut off from Redis) the key expires and the next
process to claim it becomes the leader. Writes are fenced by the same token
(see redis_store.APPEND), so a deposed leader can never store a reading.
"""

from __future__ import annotations

import secrets
import socket
from typing import NamedTuple

# KEYS: lease, seq.  ARGV: token, ttl ms, the seq this process knows.
# The seq key is a high-water mark: every process merges what it has seen, so a Redis
# that restarted empty still never hands out a seq that was already used.
CLAIM = """
local top = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[3]) > top then
    redis.call('SET', KEYS[2], ARGV[3])
    top = tonumber(ARGV[3])
end
local holder = redis.call('GET', KEYS[1])
if not holder then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    holder = ARGV[1]
elseif holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if holder == ARGV[1] then return {1, top} end
return {0, top}
"""

# KEYS: lease.  ARGV: token.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

MIN_TTL = 0.5  # seconds; below this, scheduling jitter alone would flip the leader


def lease_ttl(interval: float) -> float:
    """How long a lease lasts unrenewed: three intervals, so one late tick is not a takeover."""
    return max(3 * interval, MIN_TTL)


def new_token() -> str:
    """Unique per process start; readable in Redis (`GET random_stream:lease`)."""
    return f"{socket.gethostname()}:{secrets.token_hex(6)}"


class Claim(NamedTuple):
    leading: bool  # this process holds the lease (now renewed)
    top: int  # the highest seq ever handed out, as far as Redis knows


class Lease:
    """The right to tick, renewed by claiming it again every interval."""

    def __init__(
        self, client, key: str, seq_key: str, ttl: float, token: str | None = None
    ) -> None:
        self.client = client
        self.key = key
        self.seq_key = seq_key
        self.ttl_ms = max(1, round(ttl * 1000))
        self.token = token or new_token()
        self._claim = client.register_script(CLAIM)
        self._release = client.register_script(RELEASE)

    def claim(self, known_seq: int) -> Claim:
        """Take the lease if it is free, renew it if it is ours. Raises redis errors."""
        leading, top = self._claim(
            keys=[self.key, self.seq_key], args=[self.token, self.ttl_ms, known_seq]
        )
        return Claim(bool(leading), int(top))

    def release(self) -> bool:
        """Give the lease up (clean shutdown) so another process takes over at its next tick."""
        return bool(self._release(keys=[self.key], args=[self.token]))
