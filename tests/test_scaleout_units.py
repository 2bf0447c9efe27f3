"""Scale-out pieces that need no Redis server: lease timing, messages, logging once, the
channel's readings, the subscription's retries."""

import logging

import pytest
from conftest import free_port

from randstream import scaleout
from randstream.config import ConfigError, Settings
from randstream.history import Reading, StoreError
from randstream.lease import MIN_TTL, lease_ttl
from randstream.redis_store import location, message, open_redis_store
from randstream.stats import ObservedStats, Stats
from randstream.subscription import Subscription, parse


@pytest.mark.parametrize("interval, ttl", [(1.0, 3.0), (0.2, 0.6), (0.01, MIN_TTL), (60, 180)])
def test_a_lease_lasts_three_intervals_and_never_less_than_the_minimum(interval, ttl):
    assert lease_ttl(interval) == pytest.approx(ttl)


@pytest.mark.parametrize("url, where", [
    ("redis://127.0.0.1:6379/0", "127.0.0.1:6379/0"),
    ("redis://localhost", "localhost:6379/0"),
    ("rediss://user:secret@cache.internal:6380/3", "cache.internal:6380/3"),
])
def test_messages_name_the_redis_without_its_password(url, where):
    assert location(url) == where


def test_an_unreachable_redis_is_one_line_naming_it():
    with pytest.raises(StoreError) as caught:
        open_redis_store(f"redis://127.0.0.1:{free_port()}/0", retention=10, ttl=1)
    message = str(caught.value)
    assert message.startswith("--message-queue: cannot reach Redis at 127.0.0.1:")
    assert "\n" not in message


def test_db_is_refused_with_a_message_queue_before_connecting():
    settings = Settings(message_queue=f"redis://127.0.0.1:{free_port()}/0", db=":memory:")
    with pytest.raises(ConfigError, match="--db does not go with --message-queue"):
        scaleout.open_store(settings)


def test_redis_trouble_is_logged_once_per_outage(caplog):
    link = scaleout.RedisLink("127.0.0.1:6379/0")
    with caplog.at_level(logging.INFO, logger="randstream.scaleout"):
        assert link.problem is None
        link.trouble("store", ConnectionError("refused"))
        link.trouble("subscribe", ConnectionError("refused"))
        link.trouble("store", ConnectionError("refused again"))
        assert "store: refused again" in link.problem and "subscribe" in link.problem
        link.fine("store")
        assert link.problem is not None  # still not subscribed
        link.fine("subscribe")
        link.fine("subscribe")
        assert link.problem is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "redis lost (127.0.0.1:6379/0): refused",
        "redis back (127.0.0.1:6379/0)",
    ]


def test_stats_are_replaced_in_place_so_every_holder_sees_them():
    shared = Stats(0, 3)
    newer = Stats(0, 3)
    for v in (1, 2, 3):
        newer.add(v, v)
    scaleout.replace_stats(shared, newer.state())
    assert shared.to_dict() == newer.to_dict()


def test_observed_stats_are_replaced_in_place_too():
    shared = ObservedStats("pull")
    newer = ObservedStats("pull")
    for seq, v in enumerate((0.5, -2.25, 7.0), 1):
        newer.add(v, seq)
    scaleout.replace_stats(shared, newer.state())
    assert shared == newer and shared.to_dict() == newer.to_dict()


def test_a_pull_source_may_be_scaled_out():
    settings = Settings(message_queue="redis://127.0.0.1:6379/0", db=None,
                        source="examples/loadavg.py:read")
    assert settings.source == "examples/loadavg.py:read"



@pytest.mark.parametrize("reading", [
    Reading(7, 42, 1700000000.125), Reading(8, 0.1 + 0.2, 1.5), Reading(9, 3.0, 2.0),
    Reading(2**40, -(2**53), 3.0),
])
def test_a_reading_crosses_the_channel_exactly(reading):
    back = parse(message(reading).encode())
    assert back == reading and type(back.value) is type(reading.value)


@pytest.mark.parametrize("data", [
    b"not json", b"[]", b'{"seq": 1, "ts": 1.0}', b'{"seq": 1, "value": true, "ts": 1.0}',
    b'{"seq": 1, "value": NaN, "ts": 1.0}', b'{"seq": "x", "value": 1, "ts": 1.0}', None, 3,
])
def test_what_is_not_a_reading_is_not_handed_on(data):
    assert parse(data) is None


def test_the_subscription_tries_again_fast_and_logs_one_line_while_redis_is_away(caplog):
    link = scaleout.RedisLink("127.0.0.1:1/0")
    waits: list[float] = []
    handed: list[Reading] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 6:
            subscription.stop()

    subscription = Subscription(f"redis://127.0.0.1:{free_port()}/0", "test:live", link,
                                handed.append, sleep)
    with caplog.at_level(logging.INFO, logger="randstream.scaleout"):
        subscription.run()  # returns once stopped
    assert waits == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0]  # within a second of Redis answering
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["redis lost (127.0.0.1"]
    assert "subscribe" in link.problem and handed == []
