// The connection: handshake, namespace connect, ping/pong and timeout, reconnect with backoff.
import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { BACKOFF, Connection, backoffDelay } from "../../static/js/connection.js";
import { FakeTimers } from "./fake_timers.mjs";

describe("backoffDelay", () => {
  test("doubles from the base without jitter", () => {
    const delays = [0, 1, 2, 3, 4].map((n) => backoffDelay(n, { jitter: 0 }));
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000]);
  });

  test("is capped at about 30 seconds", () => {
    assert.equal(backoffDelay(50, { jitter: 0 }), BACKOFF.cap);
    assert.equal(backoffDelay(1e6, {}, () => 0), 30000);
  });

  test("jitter only shortens, by at most the jitter share", () => {
    for (const attempt of [0, 3, 10]) {
      const full = backoffDelay(attempt, { jitter: 0 });
      assert.equal(backoffDelay(attempt, BACKOFF, () => 0), full);
      assert.equal(backoffDelay(attempt, BACKOFF, () => 1), Math.round(full * 0.5));
      for (let i = 0; i < 100; i += 1) {
        const d = backoffDelay(attempt);
        assert.ok(d >= full * 0.5 - 1 && d <= full, `${d} outside [${full / 2}, ${full}]`);
      }
    }
  });

  test("spreads many clients out", () => {
    const seen = new Set(Array.from({ length: 50 }, () => backoffDelay(5)));
    assert.ok(seen.size > 10);
  });
});

/** A WebSocket stand-in that records frames and lets tests play the server. */
class FakeSocket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = null;
    FakeSocket.instances.push(this);
  }

  send(frame) {
    this.sent.push(frame);
  }

  close(code) {
    this.closed = code;
  }

  receive(frame) {
    this.onmessage?.({ data: frame });
  }

  drop(code = 1006) {
    this.onclose?.({ code });
  }
}

const HANDSHAKE = '0{"sid":"s1","upgrades":[],"pingInterval":1000,"pingTimeout":500,"maxPayload":1000000}';

describe("Connection", () => {
  let timers;
  let log;
  let conn;

  const latest = () => FakeSocket.instances[FakeSocket.instances.length - 1];

  function openAndJoin() {
    conn.open();
    latest().receive(HANDSHAKE);
    latest().receive('40{"sid":"n1"}');
  }

  beforeEach(() => {
    FakeSocket.instances = [];
    timers = new FakeTimers();
    log = [];
    conn = new Connection("ws://host/socket.io/?EIO=4&transport=websocket", {
      WebSocket: FakeSocket,
      timers,
      random: () => 0,
      hooks: {
        connect: (info) => log.push(["connect", info]),
        disconnect: (reason, retry) => log.push(["disconnect", reason, retry]),
        retry: (info) => log.push(["retry", info.attempt, info.delay]),
        event: (name, args) => log.push(["event", name, ...args]),
        connectError: (data) => log.push(["connect_error", data]),
        protocolError: (err) => log.push(["protocol_error", err.message]),
      },
    });
  });

  test("handshake, then namespace connect, then connected", () => {
    conn.open();
    assert.equal(latest().url, "ws://host/socket.io/?EIO=4&transport=websocket");
    assert.equal(conn.state, "opening");
    latest().receive(HANDSHAKE);
    assert.deepEqual(latest().sent, ["40"]);
    assert.equal(conn.state, "joining");
    latest().receive('40{"sid":"n1"}');
    assert.equal(conn.state, "open");
    assert.deepEqual(log, [["connect", { sid: "n1", reconnect: false }]]);
  });

  test("events reach the hook with their arguments", () => {
    openAndJoin();
    latest().receive('42["random_number",{"seq":1,"value":5,"ts":2}]');
    assert.deepEqual(log.at(-1), ["event", "random_number", { seq: 1, value: 5, ts: 2 }]);
  });

  test("events that arrive before the namespace reply are not lost", () => {
    conn.open();
    latest().receive(HANDSHAKE);
    latest().receive('42["history",{"readings":[]}]');
    latest().receive('40{"sid":"n1"}');
    assert.deepEqual(log.map((entry) => entry[0]), ["event", "connect"]);
  });

  test("send writes an event frame only while connected", () => {
    assert.equal(conn.send("resume", { after: 3 }), false);
    openAndJoin();
    assert.equal(conn.send("resume", { after: 3 }), true);
    assert.equal(latest().sent.at(-1), '42["resume",{"after":3}]');
  });

  test("answers each ping with a pong", () => {
    openAndJoin();
    latest().receive("2");
    latest().receive("2");
    assert.deepEqual(latest().sent, ["40", "3", "3"]);
  });

  test("pings keep the connection alive", () => {
    openAndJoin();
    for (let i = 0; i < 5; i += 1) {
      timers.advance(1400);
      latest().receive("2");
    }
    assert.equal(conn.state, "open");
    assert.equal(FakeSocket.instances.length, 1);
  });

  test("no ping within pingInterval + pingTimeout means the server is gone", () => {
    openAndJoin();
    timers.advance(1499);
    assert.equal(conn.state, "open");
    timers.advance(1);
    assert.equal(conn.state, "waiting");
    assert.equal(FakeSocket.instances[0].closed, 4000);
    assert.deepEqual(log.slice(-2), [["disconnect", "no ping from the server", true], ["retry", 1, 500]]);
  });

  test("a missing handshake times out too", () => {
    conn.open();
    timers.advance(10000);
    assert.equal(conn.state, "waiting");
  });

  test("the namespace connect carries the auth payload asked for at each connect", () => {
    let held = null;
    conn.auth = () => (held === null ? undefined : { after: held });
    openAndJoin();
    assert.deepEqual(latest().sent, ["40"], "nothing held yet: a plain connect");
    held = 41;
    latest().drop();
    timers.advance(500);
    latest().receive(HANDSHAKE);
    assert.deepEqual(latest().sent, ['40{"after":41}']);
  });

  test("reconnects with growing delays and says it is a reconnect", () => {
    openAndJoin();
    latest().drop();
    assert.deepEqual(log.at(-1), ["retry", 1, 500]);
    timers.advance(499);
    assert.equal(FakeSocket.instances.length, 1);
    timers.advance(1);
    assert.equal(FakeSocket.instances.length, 2);
    latest().drop();
    assert.deepEqual(log.at(-1), ["retry", 2, 1000]);
    timers.advance(1000);
    latest().drop();
    assert.deepEqual(log.at(-1), ["retry", 3, 2000]);
    timers.advance(2000);
    latest().receive(HANDSHAKE);
    latest().receive('40{"sid":"n2"}');
    assert.deepEqual(log.at(-1), ["connect", { sid: "n2", reconnect: true }]);
    latest().drop();
    assert.deepEqual(log.at(-1), ["retry", 1, 500], "backoff starts over after a success");
  });

  test("a server close packet leads to a retry", () => {
    openAndJoin();
    latest().receive("1");
    assert.equal(conn.state, "waiting");
  });

  test("connect_error is reported and retried with backoff", () => {
    conn.open();
    latest().receive(HANDSHAKE);
    latest().receive('44{"message":"origin not allowed"}');
    assert.deepEqual(log[0], ["connect_error", { message: "origin not allowed" }]);
    assert.equal(conn.state, "waiting");
    assert.deepEqual(log.at(-1), ["retry", 1, 500]);
  });

  test("a namespace disconnect from the server is retried", () => {
    openAndJoin();
    latest().receive("41");
    assert.equal(conn.state, "waiting");
  });

  test("garbage frames are reported and ignored", () => {
    openAndJoin();
    latest().receive("9oops");
    latest().receive("42{}");
    assert.equal(conn.state, "open");
    assert.deepEqual(log.slice(-2).map((entry) => entry[0]), ["protocol_error", "protocol_error"]);
  });

  test("close() leaves the namespace and stops retrying", () => {
    openAndJoin();
    const ws = latest();
    conn.close();
    assert.equal(ws.sent.at(-1), "41");
    assert.equal(ws.closed, 1000);
    timers.advance(60000);
    assert.equal(FakeSocket.instances.length, 1);
    assert.equal(conn.state, "closed");
  });

  test("retryNow() skips the wait", () => {
    openAndJoin();
    latest().drop();
    conn.retryNow();
    assert.equal(FakeSocket.instances.length, 2);
    assert.equal(conn.state, "opening");
  });

  test("a constructor that throws counts as a failed attempt", () => {
    const failing = new Connection("ws://x", {
      WebSocket: class { constructor() { throw new Error("blocked"); } },
      timers,
      random: () => 0,
      hooks: { retry: (info) => log.push(["retry", info.attempt, info.delay]) },
    });
    failing.open();
    assert.deepEqual(log, [["retry", 1, 500]]);
  });
});
