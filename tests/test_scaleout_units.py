"""Scale-out pieces that need no Redis server: lease timing, messages, logging once."""

import logging

import pytest
from conftest import free_port

from randstream import scaleout
from randstream.config import ConfigError, Settings
from randstream.history import StoreError
from randstream.lease import MIN_TTL, lease_ttl
from randstream.redis_store import location, open_redis_store
from randstream.stats import ObservedStats, Stats


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

