"""Scale-out: several real server processes share one stream through a real Redis.

Each test starts its own redis-server on a free port, so it can stop and restart it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ROOT, free_port

INTERVAL = 0.2

pytestmark = pytest.mark.redis

if shutil.which("redis-server") is None:
    if os.environ.get("CI"):
        raise RuntimeError("redis-server is not on PATH; CI must run the scale-out tests")
    pytest.skip("redis-server is not on PATH (tests/run installs it)", allow_module_level=True)

import redis  # noqa: E402

from randstream.history import Reading  # noqa: E402
from randstream.lease import Lease  # noqa: E402
from randstream.redis_store import Fenced, Keys, RedisStore, connect  # noqa: E402
from randstream.stats import ObservedStats, Stats  # noqa: E402


class RedisServer:
    """`redis-server` on 127.0.0.1 and a free port, without persistence."""

    def __init__(self, log_path):
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log = self.log_path.read_text()
                    raise RuntimeError(f"redis-server did not start:\n{log}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis.log").start()
    yield server
    server.kill()


@pytest.fixture
def cluster(redis_server, server_factory):
    """cluster(n): n server processes on their own ports, one stream through Redis."""

    def start(n: int, *args: str):
        servers = [server_factory("--interval", str(INTERVAL), "--message-queue", redis_server.url,
                                  *args, db=None, launch=False) for _ in range(n)]
        with ThreadPoolExecutor(n) as pool:  # they start side by side, as in production
            list(pool.map(lambda s: s.start(), servers))
        return servers

    return start


def pairs(readings: list[dict]) -> list[tuple[int, int]]:
    return [(r["seq"], r["value"]) for r in readings]


def strictly_increasing(seqs: list[int]) -> bool:
    return all(a < b for a, b in zip(seqs, seqs[1:]))


def ticks(server) -> float:
    """random_stream_ticks_total from /metrics: readings this process drew."""
    status, text = server.get("/metrics")
    match = re.search(r"^random_stream_ticks_total (\S+)$", text, re.M)
    return float(match.group(1))


def leader_of(servers) -> int:
    """Index of the process that draws (the only one whose tick count grows)."""
    before = [ticks(s) for s in servers]
    time.sleep(4 * INTERVAL)
    grew = [i for i, s in enumerate(servers) if ticks(s) > before[i]]
    assert len(grew) == 1, f"exactly one process should tick, these did: {grew}"
    return grew[0]


def wait_until(predicate, timeout: float = 20.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


# --- the lease and the fenced store, against Redis directly ---------------------------------


def test_one_lease_holder_and_a_fenced_store(redis_server):
    client = connect(redis_server.url)
    keys = Keys.with_prefix("test:")
    a = RedisStore(client, Lease(client, keys.lease, keys.seq, ttl=0.3), 100, keys, "test")
    b = RedisStore(client, Lease(client, keys.lease, keys.seq, ttl=0.3), 100, keys, "test")
    state = {"lo": 0, "hi": 1}

    assert a.lease.claim(0) == (True, 0)
    assert b.lease.claim(0) == (False, 0)
    a.append(Reading(1, 1, 1.0), state)
    with pytest.raises(Fenced):
        b.append(Reading(2, 0, 2.0), state)  # not the holder: nothing stored
    with pytest.raises(Fenced):
        a.append(Reading(1, 0, 2.0), state)  # a seq is never reused, even by the holder

    time.sleep(0.5)  # a stops renewing; its lease expires
    assert b.lease.claim(0) == (True, 1)
    b.append(Reading(2, 0, 2.0), state)
    with pytest.raises(Fenced):
        a.append(Reading(3, 1, 3.0), state)  # deposed: can neither write nor reuse seq 2
    assert a.lease.claim(2) == (False, 2)
    assert b.lease.release() and not a.lease.release()
    assert a.lease.claim(2).leading

    assert [tuple(r) for r in a.after(0, 10)] == [(1, 1, 1.0), (2, 0, 2.0)]
    assert a.last_seq() == 2 and a.head() == (2, state)


def test_the_seq_high_water_mark_survives_a_redis_that_lost_its_data(redis_server):
    client = connect(redis_server.url)
    keys = Keys.with_prefix("test:")
    lease = Lease(client, keys.lease, keys.seq, ttl=1)
    client.flushdb()  # as after a restart without persistence
    assert lease.claim(41) == (True, 41)  # the holder's own knowledge is merged in
    store = RedisStore(client, lease, 100, keys, "test")
    with pytest.raises(Fenced):
        store.append(Reading(41, 0, 1.0), {"lo": 0, "hi": 1})
    store.append(Reading(42, 0, 1.0), {"lo": 0, "hi": 1})


def test_a_tick_in_flight_at_the_stop_does_not_claim_the_released_lease(redis_server, caplog):
    """Threading: the ticker's thread can be past its last look at `running`, on its way to
    the claim, when stop() releases the lease; that claim must not take the lease back
    (this process would then hold it, unrenewed, for a TTL after it stopped)."""
    from random_stream import create_app
    from randstream.config import Settings

    app = create_app(Settings(async_mode="threading", message_queue=redis_server.url, db=None,
                              interval=0.5))  # the lease lasts 1.5 s unrenewed
    stream = app.extensions["stream"]
    ticker, client = stream.ticker, connect(redis_server.url)
    key, token = stream.store.keys.lease, ticker.lease.token.encode()
    woke = threading.Event()

    def slow_wall_clock() -> float:
        # Called once the tick's thread has seen `running` still true, before it claims.
        if ticker.ticks >= 2 and not woke.is_set():
            woke.set()
            time.sleep(0.3)  # the tick in flight while the stop runs
        return time.time()

    ticker.wall_clock = slow_wall_clock
    try:
        with caplog.at_level(logging.INFO, logger="randstream.ticker"):
            stream.start()
            assert woke.wait(10), "the ticker did not lead"
            assert client.get(key) == token
            stream.stop()  # releases the lease while the tick is on its way to claim it
            wait_until(lambda: "ticker stopped" in caplog.text, timeout=10)
            assert client.get(key) is None, "the stopped process claimed the lease again"
    finally:
        stream.stop()
        stream.close()
        client.close()


# --- real server processes -------------------------------------------------------------------


def one_stream(one, two) -> dict:
    """Two viewers (of two processes) got the same readings, each once and without a gap;
    the first one's {seq: value}."""
    one.wait_for(lambda: len(one.numbers) >= 12)
    two.wait_for(lambda: len(two.numbers) >= 12)
    a, b = dict(one.readings()), dict(two.readings())
    common = sorted(set(a) & set(b))
    assert len(common) >= 10
    assert [a[s] for s in common] == [b[s] for s in common]
    for viewer in (one, two):
        seqs = [s for s, _ in viewer.readings()]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # once each, no gap
    return a


def test_clients_on_two_processes_receive_the_same_stream(cluster, viewers):
    first, second = cluster(2)
    one, two = viewers(first.url), viewers(second.url)
    a = one_stream(one, two)
    for viewer in (one, two):
        assert viewer.histories, "a snapshot on connect"
    # One stream id, the cluster's: a client may resume on either process.
    assert one.histories[0]["stream"] == two.histories[0]["stream"]
    assert re.fullmatch("[0-9a-f]{16}", one.histories[0]["stream"]["id"])

    leader_of([first, second])  # exactly one of them draws
    # history, the API and the statistics agree whichever process is asked
    wait_until(lambda: first.get("/api/stats")[1] == second.get("/api/stats")[1])
    h1, h2 = (dict(pairs(s.get("/api/history?limit=50")[1]["readings"])) for s in (first, second))
    both = set(h1) & set(h2)
    assert len(both) >= 15 and all(h1[s] == h2[s] for s in both)
    assert all(h1[s] == a[s] for s in set(h1) & set(a))
    for server in (first, second):
        status, body = server.get("/healthz")
        assert status == 200, body
    assert first.stop() == 0 and second.stop() == 0
    for server in (first, second):
        assert "Traceback" not in server.log()


def test_killing_the_ticking_process_hands_over_and_seq_goes_on(cluster, viewers):
    servers = cluster(3)
    watchers = [viewers(s.url) for s in servers]
    for w in watchers:
        w.wait_for(lambda w=w: len(w.numbers) >= 5)
    leader = leader_of(servers)
    servers[leader].proc.send_signal(signal.SIGKILL)
    servers[leader].proc.wait(10)
    survivors = [w for i, w in enumerate(watchers) if i != leader]
    before = {id(w): w.last_seq() for w in survivors}
    for w in survivors:
        w.wait_for(lambda w=w: w.last_seq() >= before[id(w)] + 10)

    alive = [s for i, s in enumerate(servers) if i != leader]
    new_leader = alive[leader_of(alive)]
    for w in survivors:
        seqs = [s for s, _ in w.readings()]
        assert strictly_increasing(seqs), seqs
    for server in alive:
        # The stored stream has no duplicate and no hole: the gap is in time only.
        stored = [r["seq"] for r in server.get("/api/history?limit=200")[1]["readings"]]
        assert stored == list(range(stored[0], stored[0] + len(stored)))
    first, second = (dict(w.readings()) for w in survivors)
    common = set(first) & set(second)
    assert common and all(first[s] == second[s] for s in common)

    # failover time: the last reading before the kill to the first after it (for the report)
    with survivors[0].changed:
        stamps = [r["ts"] for r in survivors[0].numbers]
    gap = max(b - a for a, b in zip(stamps, stamps[1:]))
    print(f"\nfailover: longest gap between readings {gap:.2f}s (interval {INTERVAL}s)")
    assert "leading:" in new_leader.log()


def test_a_hung_ticking_process_is_replaced_and_steps_down_when_it_wakes(cluster, viewers):
    servers = cluster(2)
    watchers = [viewers(s.url) for s in servers]
    for w in watchers:
        w.wait_for(lambda w=w: len(w.numbers) >= 5)
    leader = leader_of(servers)
    other = 1 - leader
    servers[leader].proc.send_signal(signal.SIGSTOP)  # hangs: alive, silent, lease unrenewed
    try:
        mark = watchers[other].last_seq()
        watchers[other].wait_for(lambda: watchers[other].last_seq() >= mark + 10)
    finally:
        servers[leader].proc.send_signal(signal.SIGCONT)
    assert leader_of(servers) == other  # the woken one follows; it does not fight back
    wait_until(lambda: "following: lease lost" in servers[leader].log())
    mark = max(w.last_seq() for w in watchers)
    for w in watchers:
        w.wait_for(lambda w=w: w.last_seq() >= mark + 5)
        assert strictly_increasing([s for s, _ in w.readings()])
    stored = [r["seq"] for r in servers[leader].get("/api/history?limit=200")[1]["readings"]]
    assert stored == list(range(stored[0], stored[0] + len(stored)))


def test_processes_in_every_async_mode_share_one_stream(viewers, redis_server, server_factory):
    servers = [server_factory("--interval", str(INTERVAL), "--message-queue", redis_server.url,
                              "--async-mode", mode, db=None)
               for mode in ("eventlet", "gevent", "threading")]
    watchers = [viewers(s.url) for s in servers]
    for w in watchers:
        w.wait_for(lambda w=w: len(w.numbers) >= 8)
    streams = [dict(w.readings()) for w in watchers]
    common = set.intersection(*(set(x) for x in streams))
    assert len(common) >= 5
    assert all(len({x[seq] for x in streams}) == 1 for seq in common)
    for w in watchers:
        seqs = [s for s, _ in w.readings()]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_a_client_resumes_without_loss_on_another_process(cluster, viewers):
    first, second = cluster(2)
    away = viewers(first.url)
    away.wait_for(lambda: len(away.numbers) >= 5)
    away.close()
    last = away.last_seq()
    time.sleep(6 * INTERVAL)  # readings go by while it is away

    back = viewers(second.url)
    back.wait_for(lambda: back.histories)
    back.client.emit("resume", {"after": last})
    back.wait_for(lambda: len(back.histories) >= 2)
    resumed = [r["seq"] for r in back.histories[1]["readings"]]
    assert resumed[0] == last + 1 and resumed == list(range(last + 1, last + 1 + len(resumed)))
    assert len(resumed) >= 5
    back.wait_for(lambda: back.numbers and back.last_seq() > resumed[-1])
    live = [s for s, _ in back.readings()]
    assert sorted(set(resumed) | set(live)) == list(range(last + 1, max(live) + 1))


def test_redis_stopped_and_restarted_mid_run_is_survived(cluster, viewers, redis_server):
    servers = cluster(2)
    watchers = [viewers(s.url) for s in servers]
    for w in watchers:
        w.wait_for(lambda w=w: len(w.numbers) >= 5)

    redis_server.kill()
    for server in servers:
        status, body = wait_until(lambda s=server: (lambda r: r[0] == 503 and r)(s.get("/healthz")))
        assert any("redis" in p for p in body["problems"]), body
        assert server.get("/")[0] == 200  # pages are still served
        assert server.get("/api/latest")[0] == 200
    before = max(w.last_seq() for w in watchers)
    time.sleep(5 * INTERVAL)

    redis_server.start()  # same port, empty: no persistence
    for server in servers:
        wait_until(lambda s=server: s.get("/healthz")[0] == 200, timeout=30)
    for w in watchers:
        w.wait_for(lambda w=w: w.last_seq() >= before + 5, timeout=30)
        seqs = [s for s, _ in w.readings()]
        assert strictly_increasing(seqs), seqs
    for server in servers:
        # seq went on from where it was, although Redis came back empty
        readings = server.get(f"/api/history?after={before - 3}&limit=100")[1]["readings"]
        stored = [r["seq"] for r in readings]
        assert len(stored) > 5 and stored == list(range(before - 2, before - 2 + len(stored)))
    for server in servers:
        log = server.log()
        assert log.count("redis lost") == 1 and log.count("redis back") == 1, log
        assert "Traceback" not in log
    leader_of(servers)


def test_unreachable_redis_at_start_is_one_line_and_a_failure(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [sys.executable, str(ROOT / "random_stream.py"), "--port", str(free_port()),
         "--message-queue", url],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot reach Redis" in lines[0] and "127.0.0.1" in lines[0]


def test_a_process_with_another_range_is_refused(redis_server):
    client = connect(redis_server.url)
    keys = Keys.with_prefix()
    store = RedisStore(client, Lease(client, keys.lease, keys.seq, ttl=0.1), 100, keys, "test")
    store.lease.claim(0)
    store.append(Reading(1, 7, 1.0), Stats(0, 100).state())  # a stream over [0, 100]
    result = subprocess.run(
        [sys.executable, str(ROOT / "random_stream.py"), "--port", str(free_port()),
         "--message-queue", redis_server.url, "--max", "50"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "draws from [0, 100], not [0, 50]" in result.stderr and result.stderr.count("\n") == 1


def test_db_with_message_queue_is_refused(redis_server):
    result = subprocess.run(
        [sys.executable, str(ROOT / "random_stream.py"), "--port", str(free_port()),
         "--message-queue", redis_server.url, "--db", ":memory:"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "--db" in result.stderr


def test_sse_on_every_process_of_a_cluster_carries_the_one_stream(cluster):
    from test_sse import SseReader

    servers = cluster(2)
    readers = [SseReader(s.url) for s in servers]
    got = [[r.next_event() for _ in range(8)] for r in readers]
    for events in got:
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + 8))  # the follower's too: no gap
    a, b = ({e["seq"]: e for e in events} for events in got)
    common = set(a) & set(b)
    assert len(common) >= 5 and all(a[s] == b[s] for s in common)
    for reader in readers:
        reader.close()


def test_a_reading_heard_twice_reaches_no_viewer_twice(cluster, viewers, redis_server):
    """Each reading on Redis's channels is published a second time, as a reconnecting
    publisher may: every viewer still gets each seq once, in order."""
    servers = cluster(2)
    watchers = [viewers(s.url) for s in servers]
    for w in watchers:
        w.wait_for(lambda w=w: len(w.numbers) >= 3)
    client = redis.Redis(port=redis_server.port)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("random_stream:*")  # whatever channel carries the readings
    again: set[bytes] = set()
    deadline = time.monotonic() + 20
    while len(again) < 10 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
        if message and b"seq" in message["data"] and message["data"] not in again:
            again.add(message["data"])
            client.publish(message["channel"], message["data"])
    pubsub.close()
    assert len(again) >= 10
    mark = max(w.last_seq() for w in watchers)
    for w in watchers:
        w.wait_for(lambda w=w: w.last_seq() >= mark + 3)
        seqs = [s for s, _ in w.readings()]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # once each, no gap
    for server in servers:
        stored = [r["seq"] for r in server.get("/api/history?limit=100")[1]["readings"]]
        assert stored == list(range(stored[0], stored[0] + len(stored)))


# --- the subscription: how readings reach each process, without a server ----------------------


class Member:
    """One process's reading path on a real Redis: its store, history, stats, fan-out (to a
    list: what its clients would get), subscription and SharedTicker, built as topology.py
    builds them. tick() is called by hand."""

    def __init__(self, url: str):
        from randstream import scaleout
        from randstream.config import Settings
        from randstream.fanout import Fanout
        from randstream.history import History
        from randstream.subscription import Subscription

        settings = Settings(message_queue=url, db=None, interval=0.1)
        self.store = scaleout.open_store(settings)
        self.history = History(self.store, 50)
        self.stats = Stats(0, 100)
        follower = scaleout.Follower(self.history, self.stats, self.store, 0, 100)
        self.handed: list[Reading] = []
        self.fanout = Fanout(follower, [self.handed.append], self.history.last_seq)
        self.link = scaleout.link_for(settings)
        self.ticker = scaleout.SharedTicker(follower, self.fanout.publish, settings=settings,
                                            sleep=time.sleep, store=self.store, link=self.link)
        self.subscription = Subscription(url, self.store.keys.live, self.link,
                                         self.fanout.publish, time.sleep)
        self.task = threading.Thread(target=self.subscription.run, daemon=True)
        self.task.start()

    def close(self) -> None:
        self.subscription.stop()
        self.store.close()


@pytest.fixture
def members(redis_server):
    """members(n): n processes' reading paths, each subscribed before it is returned."""
    made: list[Member] = []
    client = connect(redis_server.url)

    def make(n: int) -> list[Member]:
        made.extend(Member(redis_server.url) for _ in range(n))
        channel = made[0].store.keys.live
        wait_until(lambda: client.pubsub_numsub(channel)[0][1] == len(made))
        return made[-n:]

    yield make
    for member in made:
        member.close()
    client.close()


def handed(member) -> list[tuple[int, int]]:
    return [(r.seq, r.value) for r in member.handed]


def test_a_follower_hands_out_what_the_leader_stores_once_and_in_order(members):
    leader, follower = members(2)
    for _ in range(5):
        assert leader.ticker.tick() is not None  # the first to claim leads
        assert follower.ticker.tick() is None  # follows: draws nothing
    wait_until(lambda: len(follower.handed) == 5 and leader.subscription.heard == 5)
    assert [s for s, _ in handed(leader)] == [1, 2, 3, 4, 5]  # its own at once, not again
    assert handed(follower) == handed(leader)
    assert leader.fanout.repeats == 5  # each heard back from Redis, or first heard and then drawn
    assert leader.ticker.ticks == 5 and follower.ticker.ticks == 0
    # the follower's history and stats are the leader's, from the channel alone
    assert follower.history.latest(10) == leader.history.latest(10)
    assert follower.stats.to_dict() == leader.stats.to_dict() and follower.stats.count == 5
    assert follower.history.last_seq == follower.fanout.last_seq == 5


def test_a_message_heard_twice_or_late_is_handed_out_once(members, redis_server):
    leader, follower = members(2)
    for _ in range(3):
        leader.ticker.tick()
    wait_until(lambda: len(follower.handed) == 3)
    client = connect(redis_server.url)
    channel = follower.store.keys.live
    for seq in (3, 2, 3, 1):  # the newest again, then older ones
        kept = follower.history.after(seq - 1, 1)[0]
        client.publish(channel, json.dumps(kept.to_dict()))
    client.publish(channel, b"not a reading")
    leader.ticker.tick()
    wait_until(lambda: len(follower.handed) == 4)
    wait_until(lambda: follower.subscription.heard == 8)
    assert [s for s, _ in handed(follower)] == [1, 2, 3, 4]
    assert follower.fanout.repeats == 4
    assert [r.seq for r in follower.history.latest(10)] == [1, 2, 3, 4]
    assert follower.stats.count == 4
    client.close()


def test_what_the_channel_missed_comes_with_the_catch_up_the_newest_handed_out(members):
    leader, follower = members(2)
    leader.ticker.tick()
    wait_until(lambda: len(follower.handed) == 1)
    follower.subscription.stop()  # it hears nothing more: seq 2 ends its task
    for _ in range(4):
        leader.ticker.tick()
    follower.ticker.tick()  # its catch-up: 2..5 into the history, the newest handed out
    assert [s for s, _ in handed(follower)] == [1, 5]  # its clients resume 2..4
    assert follower.history.latest(10) == leader.history.latest(10)
    assert follower.stats.to_dict() == leader.stats.to_dict() and follower.stats.count == 5
    follower.task.join(10)
    assert not follower.task.is_alive()  # the stopped subscription ended at its next message


def test_a_reading_heard_after_a_gap_is_handed_out_with_the_gap_in_the_history(members):
    """A process that missed readings on the channel (a gunicorn worker subscribed a moment
    late, a takeover) hears the next one: it reads the gap from Redis before handing that
    one out, so a client's `resume` for the gap, sent when it arrives, finds it here (it
    was answered with nothing until the ticker's next catch-up)."""
    leader, follower = members(2)
    leader.ticker.tick()
    wait_until(lambda: len(follower.handed) == 1)
    follower.subscription.stop()  # hears nothing more
    for _ in range(3):
        leader.ticker.tick()
    follower.fanout.publish(leader.history.latest(1)[0])  # seq 4, as if heard after all
    assert [s for s, _ in handed(follower)] == [1, 4]  # its clients resume 2..3 ...
    assert [r.seq for r in follower.history.after(1, 10)] == [2, 3, 4]  # ... which are here
    assert follower.stats.to_dict() == leader.stats.to_dict()


def test_a_stopped_subscription_ends_at_once_on_a_quiet_channel(members):
    (member,) = members(1)
    member.subscription.stop()  # no reading will come: its listen() must end all the same
    member.task.join(5)
    assert not member.task.is_alive()


def test_streams_in_two_databases_of_one_redis_do_not_hear_each_other(redis_server):
    # Pub/Sub channels are the whole server's, keys one database's (docs/scaleout.md runs a
    # second stream in another database): each stream's readings reach its own clients only.
    client = connect(redis_server.url)
    zero, one = Member(redis_server.url), Member(redis_server.url.rsplit("/", 1)[0] + "/1")
    try:
        assert zero.store.keys.live != one.store.keys.live
        wait_until(lambda: all(client.pubsub_numsub(m.store.keys.live)[0][1] == 1
                               for m in (zero, one)))
        for _ in range(3):
            zero.ticker.tick()
        one.ticker.tick()
        wait_until(lambda: zero.subscription.heard == 3 and one.subscription.heard == 1)
        zero.ticker.tick()
        wait_until(lambda: zero.subscription.heard == 4)
        assert [s for s, _ in handed(zero)] == [1, 2, 3, 4]
        assert [s for s, _ in handed(one)] == [1]
        assert one.history.last_seq == 1 and one.stats.count == 1
    finally:
        for member in (zero, one):
            member.close()
        client.close()


def test_redis_restarted_is_logged_once_and_heard_again_within_a_second(members, redis_server,
                                                                         caplog):
    (follower,) = members(1)
    with caplog.at_level(logging.INFO, logger="randstream.scaleout"):
        redis_server.kill()
        wait_until(lambda: follower.link.problem is not None)
        assert "subscribe" in follower.link.problem
        time.sleep(1.5)  # several attempts to subscribe again meanwhile
        redis_server.start()  # same port, empty
        back = time.monotonic()
        client = connect(redis_server.url)
        wait_until(lambda: client.pubsub_numsub(follower.store.keys.live)[0][1] == 1, step=0.02)
        resubscribed = time.monotonic() - back
        wait_until(lambda: follower.link.problem is None)
    assert resubscribed < 1.5, f"subscribed again {resubscribed:.2f}s after Redis was back"
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("redis lost") for m in messages) == 1, messages
    assert sum(m.startswith("redis back") for m in messages) == 1, messages
    leader = Member(redis_server.url)  # a process that ticks on the restarted Redis
    leader.ticker.tick()
    wait_until(lambda: len(follower.handed) == 1)
    assert follower.handed == leader.handed
    leader.close()
    client.close()


def test_a_takeover_goes_on_at_the_next_seq_for_every_process(members):
    first, second = members(2)
    for _ in range(3):
        first.ticker.tick()
        second.ticker.tick()
    first.ticker.stop()  # a clean stop: the lease is released
    for _ in range(3):
        assert second.ticker.tick() is not None  # takes over
        first.ticker.tick()
    wait_until(lambda: len(first.handed) == 6 and len(second.handed) == 6)
    assert [s for s, _ in handed(first)] == [1, 2, 3, 4, 5, 6]
    assert handed(first) == handed(second)
    assert first.ticker.leading is False and second.ticker.leading is True
    assert first.history.latest(10) == second.history.latest(10)
    assert first.stats.to_dict() == second.stats.to_dict()


def test_a_scaled_out_app_serves_socketio_with_its_own_client_manager(redis_server, settings):
    import dataclasses

    from socketio import PubSubManager

    from random_stream import create_app

    app = create_app(dataclasses.replace(settings, db=None, message_queue=redis_server.url))
    try:
        manager = app.extensions["socketio"].server.manager
        assert not isinstance(manager, PubSubManager)  # no Socket.IO traffic through Redis
        assert manager is app.extensions["stream"].transport.manager
    finally:
        app.extensions["stream"].close()


# --- a pull source, scaled out ---------------------------------------------------------------

PULL_MODULE = """
import random

_rng = random.Random()


def read():
    return _rng.random() * 100 + 0.5  # a float, never twice the same
"""


@pytest.fixture
def pull_source(tmp_path) -> str:
    path = tmp_path / "reading.py"
    path.write_text(PULL_MODULE)
    return f"{path}:read"


def calls(server) -> int:
    """How often this process called the pull source (/healthz)."""
    return server.get("/healthz")[1]["source"]["calls"]


def test_float_values_stored_in_redis_come_back_as_they_were(redis_server):
    client = connect(redis_server.url)
    keys = Keys.with_prefix("test:")
    store = RedisStore(client, Lease(client, keys.lease, keys.seq, ttl=1), 100, keys, "test")
    store.lease.claim(0)
    values = [0.1 + 0.2, 3.0, 3, -1e-07, 2**53, 1.7976931348623157e308, -0.0, 2.5, 2.0**53]
    for seq, value in enumerate(values, 1):
        store.append(Reading(seq, value, float(seq)), ObservedStats("pull").state())
    back = [r.value for r in store.after(0, 10)]
    assert back == values and [type(v) for v in back] == [type(v) for v in values]
    assert [str(v) for v in back] == [str(v) for v in values]  # -0.0 keeps its sign


def test_the_stream_id_is_the_clusters_and_survives_a_redis_that_lost_its_data(redis_server):
    client = connect(redis_server.url)
    keys = Keys.with_prefix("test:")

    def store(keys=keys) -> RedisStore:
        return RedisStore(client, Lease(client, keys.lease, keys.seq, ttl=1), 100, keys, "test")

    first = store()
    assert re.fullmatch("[0-9a-f]{16}", first.stream_id)
    assert store().stream_id == first.stream_id, "every process of the cluster: one stream"
    assert store(Keys.with_prefix("other:")).stream_id != first.stream_id
    client.flushdb()  # as after a restart without persistence, while the processes run
    assert first.lease.claim(0).leading
    first.append(Reading(1, 1, 1.0), {"lo": 0, "hi": 1})  # the leader's next reading
    assert store().stream_id == first.stream_id, "the stream goes on, so does its id"


def test_a_float_pull_source_is_one_stream_on_every_process(cluster, viewers, pull_source):
    first, second = cluster(2, "--source", pull_source)
    one, two = viewers(first.url), viewers(second.url)
    a = one_stream(one, two)
    assert all(isinstance(v, float) and v != int(v) for v in a.values())

    leader = leader_of([first, second])  # one process draws ...
    follower = (first, second)[1 - leader]
    assert calls((first, second)[leader]) >= 10 and calls(follower) == 0  # ... and only it calls
    # history, the API and the observed statistics agree whichever process is asked
    wait_until(lambda: first.get("/api/stats")[1] == second.get("/api/stats")[1])
    stats = first.get("/api/stats")[1]
    assert stats["kind"] == "observed" and stats["source"] == "pull" and stats["uniformity"] is None
    h1, h2 = (dict(pairs(s.get("/api/history?limit=50")[1]["readings"])) for s in (first, second))
    both = set(h1) & set(h2)
    assert len(both) >= 15 and all(h1[s] == h2[s] for s in both)
    assert all(h1[s] == a[s] for s in set(h1) & set(a))  # the follower kept the floats exact
    for server in (first, second):
        status, body = server.get("/healthz")
        assert status == 200, body
    assert first.stop() == 0 and second.stop() == 0
    for server in (first, second):
        assert "Traceback" not in server.log()


def test_killing_the_pulling_leader_hands_over_and_seq_goes_on(cluster, viewers, pull_source):
    servers = cluster(2, "--source", pull_source)
    watchers = [viewers(s.url) for s in servers]
    for w in watchers:
        w.wait_for(lambda w=w: len(w.numbers) >= 5)
    leader = leader_of(servers)
    other = 1 - leader
    assert calls(servers[other]) == 0
    servers[leader].proc.send_signal(signal.SIGKILL)
    servers[leader].proc.wait(10)
    mark = watchers[other].last_seq()
    watchers[other].wait_for(lambda: watchers[other].last_seq() >= mark + 10)

    assert leader_of([servers[other]]) == 0 and calls(servers[other]) > 0
    seqs = [s for s, _ in watchers[other].readings()]
    assert strictly_increasing(seqs), seqs
    stored = [r["seq"] for r in servers[other].get("/api/history?limit=200")[1]["readings"]]
    assert stored == list(range(stored[0], stored[0] + len(stored)))  # no hole, no duplicate
    assert stored[-1] > mark
    assert "leading:" in servers[other].log()


@pytest.mark.parametrize("stored, argv, message", [
    (Stats(0, 100).state(), ["--source", "examples/loadavg.py:read"],
     "comes from --source random, not module:callable"),
    (ObservedStats("pull").state(), [], "comes from --source module:callable, not random"),
])
def test_a_process_of_another_source_kind_is_refused(redis_server, stored, argv, message):
    client = connect(redis_server.url)
    keys = Keys.with_prefix()
    store = RedisStore(client, Lease(client, keys.lease, keys.seq, ttl=0.1), 100, keys, "test")
    store.lease.claim(0)
    store.append(Reading(1, 7, 1.0), stored)
    result = subprocess.run(
        [sys.executable, str(ROOT / "random_stream.py"), "--port", str(free_port()),
         "--message-queue", redis_server.url, *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "another Redis database" in result.stderr


@pytest.mark.parametrize("source", ["stdin", "http"])
def test_a_push_source_with_a_message_queue_is_refused_saying_why(redis_server, source):
    result = subprocess.run(
        [sys.executable, str(ROOT / "random_stream.py"), "--port", str(free_port()),
         "--message-queue", redis_server.url, "--source", source,
         "--ingest-token", "t" * 32],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"--source {source} does not go with --message-queue" in result.stderr
    assert "each process would receive its own pushes" in result.stderr
    assert "the one lease holder" in result.stderr


class PullUnderTest:
    """A SharedTicker in this process on a real Redis, its pull source a call we release.

    tick() is called by hand, so the test decides when the lease is claimed.
    """

    def __init__(self, url: str):
        from randstream import scaleout
        from randstream.config import Settings
        from randstream.fanout import Fanout
        from randstream.history import History
        from randstream.sources import PullSource

        self.settings = Settings(message_queue=url, db=None, interval=0.1, source="test:read")
        self.store = scaleout.open_store(self.settings)
        self.started, self.release = threading.Event(), threading.Event()
        self.value = 1.5
        self.broadcasts: list[Reading] = []  # what this process's clients get
        self.tasks: list[threading.Thread] = []
        history = History(self.store, 50)
        follower = scaleout.Follower(history, ObservedStats("pull"), self.store, 0, 100)
        fanout = Fanout(follower, [self.broadcasts.append], history.last_seq)
        self.ticker = scaleout.SharedTicker(
            follower, fanout.publish, settings=self.settings, sleep=time.sleep,
            store=self.store, link=scaleout.link_for(self.settings),
            source=PullSource("test:read", self.read), spawn=self.spawn,
        )
        self.ticker.running = True

    def read(self) -> float:
        self.started.set()
        assert self.release.wait(20)
        return self.value

    def spawn(self, fn) -> None:
        task = threading.Thread(target=fn, daemon=True)
        self.tasks.append(task)
        task.start()

    def finish(self) -> None:
        """Let the call return and wait for its task to end."""
        self.release.set()
        for task in self.tasks:
            task.join(10)
            assert not task.is_alive()
        self.tasks.clear()

    def rival(self) -> RedisStore:
        """Another process's store: it takes the lease once ours has expired."""
        client = connect(self.settings.message_queue)
        keys = self.store.keys
        other = RedisStore(client, Lease(client, keys.lease, keys.seq, ttl=5), 100, keys, "rival")
        wait_until(lambda: other.lease.claim(self.ticker.history.last_seq).leading)
        return other


def test_a_pull_whose_lease_moved_on_is_neither_stored_nor_broadcast(redis_server):
    pull = PullUnderTest(redis_server.url)
    pull.ticker.tick()  # leads, and starts the call
    assert pull.ticker.leading and pull.started.wait(10)
    rival = pull.rival()  # our lease expired during the call (it is never renewed here)
    rival_stats = ObservedStats("pull")
    rival_stats.add(2.5, 1)
    rival.append(Reading(1, 2.5, 1.0), rival_stats.state())
    pull.finish()  # the call returns before our next claim: the fence refuses the value
    assert pull.broadcasts == [] and pull.ticker.leading is False
    assert [tuple(r) for r in pull.store.after(0, 10)] == [(1, 2.5, 1.0)]

    pull.release.clear()
    pull.started.clear()
    pull.ticker.tick()  # follows: no call
    assert not pull.started.is_set() and pull.ticker.history.last_seq == 1
    assert rival.lease.release()
    pull.ticker.tick()  # leads again, calls
    assert pull.ticker.leading and pull.started.wait(10)
    assert rival.lease.claim(1).leading is False
    pull.finish()
    # The rival's reading, caught up from Redis (no subscription here), then our own: the
    # value whose lease moved on never.
    assert [(r.seq, r.value) for r in pull.broadcasts] == [(1, 2.5), (2, 1.5)]
    assert pull.ticker.stats.count == 2 and pull.ticker.stats.max == 2.5
    pull.store.close()
    rival.close()


def test_a_pull_that_spans_a_change_of_lease_is_dropped_and_never_doubled(redis_server):
    pull = PullUnderTest(redis_server.url)
    pull.ticker.tick()
    assert pull.started.wait(10)
    rival = pull.rival()
    pull.ticker.tick()  # sees the lease gone
    assert pull.ticker.leading is False
    assert rival.lease.release()
    pull.ticker.tick()  # leads again while the first call still runs: no second call
    assert pull.ticker.leading and pull.ticker.source.skipped == 1
    assert pull.ticker.source.calls == 1
    pull.finish()  # made under the lease before: dropped, although we hold one again
    assert pull.broadcasts == [] and pull.ticker.dropped == 1
    assert pull.store.after(0, 10) == []
    pull.ticker.tick()  # the next tick calls afresh
    pull.finish()
    assert [r.seq for r in pull.broadcasts] == [1] and pull.ticker.source.calls == 2
    pull.store.close()
    rival.close()
