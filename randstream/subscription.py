"""Scale-out: how the readings of a cluster reach this process, its one subscription to Redis.

The lease holder's store script publishes every reading it stores on one Pub/Sub channel
(redis_store.APPEND), in the order of the stores. Every process, the holder included, runs
one Subscription task that hands each reading it hears to its own fan-out (fanout.py):
kept in its history if it is the next one, then to its SSE feed and its Socket.IO clients.
The fan-out drops a seq it has handed out already (the holder's own readings come back
this way; a message may come twice), and the ticker's catch-up read from Redis each
interval fills in what a process missed while it was not subscribed.

Why a channel and not a read of the readings' Redis stream (XREAD): the publish is part
of the fenced store script, so a reading is published if and only if it is stored, in
the order of the stores, with no extra round trip; a stream read would need a cursor per
process and a blocking read issued again every few hundred milliseconds, and after a
partition it would replay everything the process missed (up to --retention) to each of its
clients. Here a process that missed readings catches its history up and hands out the
newest; its clients fill the gap with `resume`, as after a dropped connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import redis

from .history import Reading
from .redis_store import connect
from .sources import check_value

log = logging.getLogger(__name__)

RESUBSCRIBE_MIN, RESUBSCRIBE_MAX = 0.25, 1.0  # seconds between attempts while Redis is away


def parse(data) -> Reading | None:
    """A reading from the channel (redis_store.message), or None if it is not one."""
    try:
        fields = json.loads(data)
        return Reading(int(fields["seq"]), check_value(fields["value"]), float(fields["ts"]))
    except (TypeError, ValueError, KeyError):  # check_value's BadValue is a ValueError
        return None


class Subscription:
    """One task per process: hears the channel, hands each reading to `publish`.

    Redis lost is reported through the RedisLink (one line an outage, with the store's);
    it subscribes again within RESUBSCRIBE_MAX of Redis answering.
    """

    def __init__(self, url: str, channel: str, link, publish: Callable[[Reading], object],
                 sleep: Callable[[float], None]) -> None:
        # No read timeout: a quiet channel is fine (keepalive notices a dead peer).
        self.client = connect(url, socket_timeout=None)
        self.channel = channel
        self.link = link  # scaleout.RedisLink: trouble(part, exc) and fine(*parts)
        self.publish = publish
        self.sleep = sleep
        self.stopped = False
        self.pubsub = None  # while subscribed: stop() unsubscribes, which ends listen()
        self.heard = 0  # readings heard on the channel (repeats included)

    def run(self) -> None:
        """The task: until stop(), subscribed whenever Redis lets it be."""
        wait = RESUBSCRIBE_MIN
        while not self.stopped:
            pubsub = None
            try:
                pubsub = self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                if self.stopped:
                    return
                pubsub.subscribe(self.channel)
                self.link.fine("subscribe")
                wait = RESUBSCRIBE_MIN
                for message in pubsub.listen():
                    if self.stopped:
                        return
                    self.hand_on(message)
            except (redis.RedisError, OSError) as exc:  # OSError: a socket Redis dropped
                if self.stopped:
                    return
                self.link.trouble("subscribe", exc)
            finally:
                self.pubsub = None
                if pubsub is not None:
                    _close(pubsub)
            self.sleep(wait)  # Redis away (or listen() ended): again, soon
            wait = min(2 * wait, RESUBSCRIBE_MAX)

    def hand_on(self, message: dict) -> None:
        reading = parse(message.get("data"))
        if reading is None:
            return
        self.heard += 1
        try:
            self.publish(reading)
        except Exception:  # a subscriber's failure must not end the subscription
            log.exception("handing on seq %d from Redis failed; the subscription goes on",
                          reading.seq)

    def stop(self) -> None:
        """End the task: unsubscribing ends its listen() with Redis's answer (closing the
        socket from here would fail the read in the task, which differs by async mode);
        if Redis is away, it ends at its next attempt to subscribe."""
        self.stopped = True
        pubsub = self.pubsub
        if pubsub is not None:
            try:
                pubsub.unsubscribe()
            except (redis.RedisError, OSError):
                pass


def _close(pubsub) -> None:
    try:
        pubsub.close()
    except (redis.RedisError, OSError):
        pass
