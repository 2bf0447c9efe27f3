"""python-socketio's Redis message queue: the fast one (RedisQueue) or its own (plain_queue).

RedisQueue overrides three of RedisManager's internals, `_handle_emit`, `_publish` and
`_redis_listen_with_retries` (checked at start: EXTENSION_POINTS); when they moved, the
queue is python-socketio's own RedisManager, and followers learn each reading from Redis
at their next tick instead of as it passes.
"""

from __future__ import annotations

import logging

import redis
import socketio
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..redis_store import CONNECT_TIMEOUT, PREFIX, connect
from .engineio import FastManager
from .points import ExtensionPoint, code_names

log = logging.getLogger(__name__)

CHANNEL = PREFIX + "socketio"
RESUBSCRIBE_MIN, RESUBSCRIBE_MAX = 0.25, 1.0  # seconds between attempts while Redis is away


def redis_options() -> dict:
    return {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 1)}  # no read timeout: a quiet channel is fine


def plain_queue(url: str) -> socketio.RedisManager:
    """python-socketio's own Redis message queue, through its documented options only."""
    return socketio.RedisManager(url, channel=CHANNEL, redis_options=redis_options())


class RedisQueue(socketio.RedisManager, FastManager):
    """Flask-SocketIO's Redis message queue, delivering locally with the fast broadcast.

    (The bases in this order put FastBroadcast between PubSubManager and Manager:
    RedisQueue, RedisManager, PubSubManager, FastManager, FastBroadcast, Manager.)
    Changed so:

    - clients that fail fast, and one log line per outage (RedisManager logs an error per
      retry, backs off to 60 s, and would block forever on a Redis that stopped answering);
    - replies to one of this process's own clients (`history`, `error`) skip Redis;
    - every `random_number` passing through is shown to `on_reading` first, so followers
      keep their history and stats in step with what their clients receive;
    - a disconnect visits the client's own rooms only (RoomIndex, from FastManager).
    """

    def __init__(self, url: str, link, on_reading=None, runtime=None) -> None:
        super().__init__(url, channel=CHANNEL, redis_options=redis_options())
        self.runtime = runtime
        self.link = link  # scaleout.RedisLink: trouble(part, exc) and fine(*parts)
        self.publisher = connect(url)
        self.on_reading = on_reading

    def emit(self, event, data, namespace=None, room=None, skip_sid=None, callback=None,
             to=None, **kwargs):
        room = to or room
        if isinstance(room, str) and self._is_local(room, namespace or "/"):
            kwargs["ignore_queue"] = True
        return super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                            callback=callback, **kwargs)

    def _is_local(self, sid: str, namespace: str) -> bool:
        try:
            return self.rooms[namespace][None].get(sid) is not None
        except KeyError:
            return False

    def _handle_emit(self, message):
        data = message.get("data")
        if (message.get("event") == "random_number" and self.on_reading is not None
                and isinstance(data, list) and len(data) == 1):
            try:
                self.on_reading(data[0])
            except Exception:
                log.exception("could not follow a reading from the queue")
        super()._handle_emit(message)

    def _publish(self, data):
        try:
            self.publisher.publish(self.channel, self.json.dumps(data))
        except redis.RedisError as exc:
            self.link.trouble("publish", exc)
        else:
            self.link.fine("publish")

    def _redis_listen_with_retries(self):
        wait = RESUBSCRIBE_MIN
        while True:
            try:
                if self.pubsub is not None:
                    self.pubsub.close()
                self._redis_connect()
                self.pubsub.subscribe(self.channel)
                self.link.fine("subscribe")
                wait = RESUBSCRIBE_MIN
                yield from self.pubsub.listen()
            except Exception as exc:  # redis errors, or OSError from a socket Redis dropped
                self.link.trouble("subscribe", exc)
                self.server.sleep(wait)
                wait = min(2 * wait, RESUBSCRIBE_MAX)


def _check_hooks() -> str | None:
    from socketio import pubsub_manager

    for name in ("_handle_emit", "_publish", "_redis_listen_with_retries", "_redis_connect"):
        if not callable(getattr(socketio.RedisManager, name, None)):
            return f"RedisManager.{name} is gone"
    for cls in (pubsub_manager.PubSubManager, socketio.RedisManager):
        # RoomIndex (FastManager) sits under them: an override of theirs would bypass it.
        for name in ("basic_enter_room", "basic_leave_room", "basic_disconnect", "get_rooms"):
            if name in vars(cls):
                return f"{cls.__name__}.{name} is its own now"
    if "_handle_emit" not in code_names(pubsub_manager.PubSubManager._thread):
        return "PubSubManager._thread no longer hands messages to _handle_emit"
    if "_publish" not in code_names(pubsub_manager.PubSubManager.emit):
        return "PubSubManager.emit no longer publishes through _publish"
    if "_redis_listen_with_retries" not in code_names(socketio.RedisManager._listen):
        return "RedisManager._listen no longer reads _redis_listen_with_retries"
    if "pubsub" not in code_names(socketio.RedisManager._redis_connect):
        return "RedisManager._redis_connect no longer makes .pubsub"
    return None


EXTENSION_POINTS = [
    ExtensionPoint("socketio RedisManager._handle_emit, _publish, _redis_listen_with_retries",
                   "followers see each reading; one log line per Redis outage; fast retries",
                   _check_hooks),
]
