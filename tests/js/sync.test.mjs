// What the page holds, kept in step with the server: live readings, gaps and `resume`,
// `history` answers, the CONNECT's auth, the backfill over HTTP, starting over, and the
// statistics' fetches. Driven by hand: the socket, the fetches and the clock are fakes.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  BACKFILL_LIMIT, MAX_RESUMES_PER_CONNECTION, STATS_REFRESH_MS, STATS_RETRY_MS, Sync, capacityFor, readingsOf,
  streamIdOf,
} from "../../static/js/sync.js";
import { FakeTimers } from "./fake_timers.mjs";

const r = (seq, value = seq % 11, ts = 1000 + seq) => ({ seq, value, ts });
const run = (from, to, make = r) => Array.from({ length: to - from + 1 }, (_, i) => make(from + i));
const fresh = (seq) => r(seq, (seq + 5) % 11, 5000 + seq); // a reading of another stream
const seqs = (buffer) => buffer.after(-Infinity).map((x) => x.seq);
const settle = () => new Promise((resolve) => setImmediate(resolve)); // let awaited fetches finish

/** /api/stats' answer for readings with seqs from..to (values as `r` makes them), range 0..10. */
function statsJson(from, to) {
  const histogram = new Array(11).fill(0);
  for (let seq = from; seq <= to; seq += 1) {
    histogram[seq % 11] += 1;
  }
  return { range: { min: 0, max: 10 }, histogram, since_seq: from, through_seq: to };
}

/**
 * A Sync as the dashboard wires it, with everything it does recorded: `sent` (socket
 * emits), `histories` (/api/history fetches), `statsCalls` (/api/stats fetches' times),
 * `events` (hooks). `stats` and `older` are what the two fetches answer (a function or a
 * value; a thrown error is a failed fetch).
 */
function page({ history = 20, interval = 1, capacity = 1000, span = 900, observed = false, stream = null } = {}) {
  const timers = new FakeTimers(10_000_000); // ms: later than the readings' times (1000 + seq s)
  const p = {
    timers,
    connected: true,
    sent: [],
    histories: [],
    statsCalls: [],
    events: [],
    stats: () => statsJson(1, p.sync.buffer.lastSeq ?? 0),
    older: (after, limit) => ({ readings: run(Math.max(1, after + 1), after + limit) }),
    settings: { lo: 0, hi: 10, interval, history, observed },
  };
  const answer = async (source, ...args) => (typeof source === "function" ? source(...args) : source);
  p.sync = new Sync({
    stream,
    settings: p.settings,
    capacity,
    span,
    send: (name, data) => p.sent.push([name, data]),
    isConnected: () => p.connected,
    getStats: () => {
      p.statsCalls.push(timers.now);
      return answer(p.stats);
    },
    getHistory: (after, limit) => {
      p.histories.push({ after, limit });
      return answer(p.older, after, limit);
    },
    now: () => timers.now,
    timers,
    hooks: {
      changed: () => p.events.push("changed"),
      startOver: () => p.events.push("startOver"),
      range: (lo, hi) => p.events.push(`range ${lo}-${hi}`),
      interval: (seconds) => p.events.push(`interval ${seconds}`),
    },
  });
  p.resumes = () => p.sent.filter(([name]) => name === "resume").map(([, data]) => data.after);
  return p;
}

describe("capacityFor", () => {
  test("the widest window at this interval plus 60, never below the server's snapshot", () => {
    assert.equal(capacityFor(900, 1, 900), 960);
    assert.equal(capacityFor(900, 0.2, 900), 4560);
    assert.equal(capacityFor(5000, 1, 900), 5000, "the snapshot on connect always fits");
  });

  test("never more than 50,000 however small the interval", () => {
    assert.equal(capacityFor(900, 0.001, 900), 50000);
    assert.equal(capacityFor(100000, 1, 900), 50000);
  });

  test("the page holds no more than its capacity, dropping the oldest", () => {
    const p = page({ capacity: 10 });
    p.sync.history({ readings: run(1, 30) });
    for (let seq = 31; seq <= 40; seq += 1) {
      p.sync.reading(r(seq));
    }
    assert.deepEqual(seqs(p.sync.buffer), [31, 32, 33, 34, 35, 36, 37, 38, 39, 40]);
  });
});

describe("readingsOf", () => {
  test("keeps the readings and drops what is not one", () => {
    assert.deepEqual(readingsOf({ readings: [r(1), { seq: "2" }, null, r(3)] }), [r(1), r(3)]);
    assert.deepEqual(readingsOf({ readings: "no" }), []);
    assert.deepEqual(readingsOf(null), []);
  });
});

describe("live readings", () => {
  test("in order: each is held, counts as an update and asks for nothing", () => {
    const p = page();
    for (const seq of [1, 2, 3]) {
      p.timers.advance(1000);
      p.sync.reading(r(seq));
    }
    assert.deepEqual(seqs(p.sync.buffer), [1, 2, 3]);
    assert.deepEqual(p.sent, []);
    assert.equal(p.sync.lastUpdateMs, p.timers.now);
    assert.equal(p.sync.clockOffset, r(3).ts - p.timers.now / 1000, "server time minus ours");
    assert.deepEqual(p.events, ["changed", "changed", "changed"]);
  });

  test("the first reading asks for nothing, whatever its seq", () => {
    const p = page();
    p.sync.reading(r(500));
    assert.deepEqual(p.sent, []);
  });

  test("a gap sends one resume with the last seq held before it", () => {
    const p = page();
    p.sync.history({ readings: run(1, 3) });
    p.sync.reading(r(6));
    assert.deepEqual(p.sent, [["resume", { after: 3 }]]);
    p.sync.reading(r(7));
    assert.deepEqual(p.resumes(), [3], "the next reading in order asks nothing more");
    assert.deepEqual(p.sync.buffer.gaps(), [{ after: 3, before: 6, missing: 2 }]);
    p.sync.reading(r(10));
    assert.deepEqual(p.resumes(), [3, 7], "a second gap, a second resume");
  });

  test("duplicates and older readings change nothing", () => {
    const p = page();
    p.sync.history({ readings: [...run(1, 3), ...run(6, 8)] });
    p.timers.advance(5000);
    const updated = p.sync.lastUpdateMs;
    const before = p.events.length;
    const sent = p.sent.length;
    p.sync.reading(r(8)); // the newest again
    p.sync.reading(r(2)); // an older one held
    assert.deepEqual(seqs(p.sync.buffer), [1, 2, 3, 6, 7, 8]);
    assert.equal(p.sync.lastUpdateMs, updated);
    assert.equal(p.events.length, before, "nothing to draw");
    assert.equal(p.sent.length, sent, "and nothing to ask");
  });

  test("an older reading that fills a hole is held, but is no update", () => {
    const p = page();
    p.sync.reading(r(1));
    p.sync.reading(r(3));
    const updated = p.sync.lastUpdateMs;
    p.timers.advance(1000);
    p.sync.reading(r(2));
    assert.deepEqual(seqs(p.sync.buffer), [1, 2, 3]);
    assert.equal(p.sync.lastUpdateMs, updated);
  });

  test("what is not a reading is ignored", () => {
    const p = page();
    for (const bad of [null, {}, { seq: 1.5, value: 1, ts: 1 }, { seq: 1, value: "1", ts: 1 }]) {
      p.sync.reading(bad);
    }
    assert.equal(p.sync.buffer.size, 0);
    assert.deepEqual(p.events, []);
  });

  test("at most 50 resumes per connection, and each after only once", () => {
    const p = page({ capacity: 1000 });
    p.sync.reading(r(1));
    for (let i = 1; i <= 60; i += 1) {
      p.sync.reading(r(1 + 2 * i)); // every other seq is missing
    }
    assert.equal(p.resumes().length, MAX_RESUMES_PER_CONNECTION);
    assert.deepEqual(p.resumes().slice(0, 3), [1, 3, 5]);
    p.sync.disconnected();
    p.sync.connected();
    p.sync.reading(r(200));
    assert.equal(p.resumes().length, MAX_RESUMES_PER_CONNECTION, "after 121: the CONNECT asked for it");
    p.sync.reading(r(300));
    assert.deepEqual(p.resumes().slice(MAX_RESUMES_PER_CONNECTION), [200], "a new connection may ask again");
  });
});

describe("history answers", () => {
  test("the snapshot is held at once, dated by its newest reading, and asks for nothing", () => {
    const p = page();
    p.sync.history({ readings: run(1, 10) });
    assert.deepEqual(seqs(p.sync.buffer), run(1, 10).map((x) => x.seq));
    assert.equal(p.sync.lastUpdateMs, r(10).ts * 1000, "the reading's time when it is older than now");
    assert.equal(p.sync.clockOffset, 0, "only live readings set the clock offset");
    assert.deepEqual(p.sent, []);
  });

  test("a snapshot dated in the future counts as arrived now", () => {
    const p = page();
    p.sync.history({ readings: [r(1, 5, p.timers.now / 1000 + 60)] });
    assert.equal(p.sync.lastUpdateMs, p.timers.now);
  });

  test("the answer to a resume fills the gap, merged in seq order", () => {
    const p = page();
    p.sync.history({ readings: run(1, 10) });
    p.sync.reading(r(16));
    assert.deepEqual(p.resumes(), [10]);
    p.sync.reading(r(17));
    p.sync.history({ readings: [r(13), r(11), r(15), r(12), r(14)] });
    assert.deepEqual(seqs(p.sync.buffer), run(1, 17).map((x) => x.seq));
    assert.deepEqual(p.sync.buffer.gaps(), []);
    assert.deepEqual(p.resumes(), [10], "nothing is left to ask for");
  });

  test("holes left after an answer are asked for, newest first, each once", () => {
    const p = page({ history: 20 });
    p.sync.history({ readings: [...run(1, 3), ...run(7, 8), ...run(12, 13)] });
    assert.deepEqual(p.resumes(), [8], "the newest hole first");
    p.sync.history({ readings: run(9, 11) });
    assert.deepEqual(p.resumes(), [8, 3]);
    p.sync.history({ readings: [] });
    assert.deepEqual(p.resumes(), [8, 3], "what never comes stays a gap");
    assert.deepEqual(p.sync.buffer.gaps(), [{ after: 3, before: 7, missing: 3 }]);
  });

  test("a hole older than the server's history is not asked for", () => {
    const p = page({ history: 5 });
    p.sync.history({ readings: [...run(1, 2), ...run(10, 20)] });
    assert.deepEqual(p.resumes(), [], "seq 10 is more than 5 readings behind seq 20");
    p.sync.history({ readings: [...run(1, 2), ...run(16, 20)].concat([r(14)]) });
    assert.deepEqual(p.resumes(), []);
  });

  test("while disconnected nothing is asked for", () => {
    const p = page();
    p.connected = false;
    p.sync.history({ readings: [r(1), r(5)] });
    assert.deepEqual(p.sent, []);
  });

  test("a malformed answer holds nothing and does not throw", () => {
    const p = page();
    for (const bad of [null, {}, { readings: null }, { readings: [1, "2", { seq: 3 }] }]) {
      p.sync.history(bad);
    }
    assert.equal(p.sync.buffer.size, 0);
  });

  test("the server's stream description updates the range and interval it differs in", () => {
    const p = page();
    p.sync.history({ stream: { min: 0, max: 10, interval: 1 }, readings: [] });
    assert.deepEqual(p.events, [], "the same stream: nothing changes");
    p.sync.history({ stream: { min: 1, max: 6, interval: 0.5 }, readings: [] });
    assert.deepEqual(p.events, ["range 1-6", "interval 0.5"]);
    assert.deepEqual(p.settings, { lo: 1, hi: 6, interval: 0.5, history: 20, observed: false });
    assert.deepEqual(p.timers.dueIn(), [0], "the statistics of the old range are fetched again");
    assert.equal(p.sync.stats.current, null);
  });

  test("values that are not a range or interval are ignored", () => {
    const p = page();
    p.sync.history({ stream: { min: 1.5, max: "9", interval: -1 }, readings: [] });
    p.sync.history({ stream: { interval: 0 }, readings: [] });
    assert.deepEqual(p.events, []);
    assert.deepEqual(p.settings, { lo: 0, hi: 10, interval: 1, history: 20, observed: false });
  });

  test("a source without a declared range keeps no range", () => {
    const p = page({ observed: true });
    p.sync.history({ stream: { min: 1, max: 6, interval: 2 }, readings: [] });
    assert.deepEqual(p.events, ["interval 2"]);
    assert.equal(p.settings.lo, 0);
  });
});

describe("reconnect", () => {
  test("the CONNECT's auth says the last seq held when the connection went away", () => {
    const p = page();
    assert.equal(p.sync.auth(), undefined, "a first connect asks for the snapshot");
    p.sync.disconnected();
    assert.equal(p.sync.auth(), undefined, "nothing held, nothing to say");
    p.sync.connected();
    p.sync.history({ readings: run(1, 12) });
    p.sync.disconnected();
    p.sync.reading(r(13)); // a late frame does not change what the reconnect asks
    assert.deepEqual(p.sync.auth(), { after: 12 });
  });

  test("what the CONNECT asked for is not asked again when live readings come first", () => {
    const p = page();
    p.sync.history({ readings: run(1, 12) });
    p.sync.disconnected();
    p.sync.connected();
    p.sync.reading(r(16)); // before the CONNECT's answer
    assert.deepEqual(p.resumes(), []);
    p.sync.history({ readings: run(13, 15) });
    assert.deepEqual(seqs(p.sync.buffer), run(1, 16).map((x) => x.seq));
    assert.deepEqual(p.resumes(), []);
  });

  test("a restarted server that kept its data goes on where the page stopped", () => {
    const p = page();
    p.sync.history({ readings: run(1, 12) });
    p.sync.disconnected();
    p.sync.connected();
    p.sync.history({ readings: run(13, 20) });
    assert.deepEqual(p.events.filter((e) => e === "startOver"), []);
    assert.equal(p.sync.buffer.size, 20);
  });
});

describe("starting over", () => {
  test("a fresh server counting from 1 again: drop everything, hold its readings", async () => {
    const p = page();
    p.sync.history({ readings: run(101, 120) });
    await settle();
    p.sync.disconnected();
    p.sync.connected();
    p.timers.advance(0);
    await settle();
    assert.notEqual(p.sync.stats.current, null);
    p.events.length = 0;
    p.sync.history({ readings: run(1, 5, fresh) });
    assert.deepEqual(p.sync.buffer.after(-Infinity), run(1, 5, fresh));
    assert.equal(p.events[0], "startOver");
    assert.equal(p.sync.stats.current, null, "the old statistics are of another stream");
    assert.equal(p.sync.auth(), undefined, "and a later reconnect asks for the snapshot");
    assert.deepEqual(p.timers.dueIn()[0], 0, "the statistics are fetched again at once");
  });

  test("a live reading below what is held starts over too", () => {
    const p = page();
    p.sync.history({ readings: run(50, 60) });
    p.sync.reading(r(1));
    assert.deepEqual(seqs(p.sync.buffer), [1]);
    assert.ok(p.events.includes("startOver"));
  });

  test("the same seq with another value starts over", () => {
    const p = page();
    p.sync.history({ readings: run(1, 10) });
    p.sync.reading(r(10, 99, 5));
    assert.deepEqual(p.sync.buffer.after(-Infinity), [r(10, 99, 5)]);
  });

  test("a duplicate is no reason to start over", () => {
    const p = page();
    p.sync.history({ readings: run(1, 10) });
    p.sync.history({ readings: run(5, 12) });
    assert.ok(!p.events.includes("startOver"));
    assert.equal(p.sync.buffer.size, 12);
  });
});

describe("stream identity", () => {
  const A = "0123456789abcdef";
  const B = "fedcba9876543210";
  const of = (id, readings) => ({ stream: { id, min: 0, max: 10, interval: 1 }, readings });

  test("the CONNECT's auth names the stream of the readings held", () => {
    const p = page();
    p.sync.history(of(A, run(1, 12)));
    assert.equal(p.sync.stream, A);
    p.sync.disconnected();
    assert.deepEqual(p.sync.auth(), { after: 12, stream: A });
  });

  test("a history of another stream replaces what is held, even when its seqs go on from ours", () => {
    // Fails before stream ids: a database swapped between restarts whose seq had moved
    // past the page's was merged after the page's readings, as if one stream.
    const p = page();
    p.sync.history(of(A, run(1, 12)));
    p.sync.disconnected();
    p.sync.connected();
    p.events.length = 0;
    p.sync.history(of(B, run(40, 50, fresh)));
    assert.deepEqual(p.sync.buffer.after(-Infinity), run(40, 50, fresh));
    assert.equal(p.events[0], "startOver");
    assert.equal(p.sync.stats.current, null, "the statistics are of the other stream");
    assert.equal(p.sync.stream, B);
    p.sync.disconnected();
    assert.deepEqual(p.sync.auth(), { after: 50, stream: B });
  });

  test("the same stream id merges as before", () => {
    const p = page();
    p.sync.history(of(A, run(1, 12)));
    p.sync.disconnected();
    p.sync.connected();
    p.sync.history(of(A, run(13, 20)));
    assert.deepEqual(seqs(p.sync.buffer), run(1, 20).map((x) => x.seq));
    assert.ok(!p.events.includes("startOver"));
  });

  test("the reading rendered into the page goes when the snapshot is another stream's", () => {
    const p = page({ stream: A });
    p.sync.hold(r(500));
    p.sync.history(of(B, run(600, 610, fresh)));
    assert.deepEqual(p.sync.buffer.after(-Infinity), run(600, 610, fresh));
    const same = page({ stream: A });
    same.sync.hold(r(500));
    same.sync.history(of(A, run(500, 510)));
    assert.equal(same.sync.buffer.size, 11);
    assert.ok(!same.events.includes("startOver"));
  });

  test("the snapshot after the rendered reading holds older ones too: they are no contradiction", () => {
    // The server renders its newest reading; its snapshot is the readings up to (at least)
    // that one, so most are below it. Before: every page load started over (dropped what
    // it held, fetched the statistics again, un-paused).
    const p = page({ stream: A });
    p.sync.hold(r(500));
    p.sync.history(of(A, run(480, 503)));
    assert.deepEqual(seqs(p.sync.buffer), run(480, 503).map((x) => x.seq));
    assert.ok(!p.events.includes("startOver"));
    // Readings below a held one that does not match still mean another stream.
    const other = page();
    other.sync.hold(r(500));
    other.sync.history({ readings: run(480, 503, fresh) });
    assert.ok(other.events.includes("startOver"));
  });

  test("a server that names no stream keeps the rules from before ids", () => {
    const p = page();
    p.sync.history(of(A, run(1, 12)));
    p.sync.history({ readings: run(13, 14) });
    assert.equal(p.sync.stream, A);
    assert.equal(p.sync.buffer.size, 14);
  });

  test("a backfill answer of another stream is dropped", async () => {
    const p = page();
    p.older = () => of(B, run(1, 100));
    await p.sync.history(of(A, run(101, 120)));
    assert.deepEqual(seqs(p.sync.buffer), run(101, 120).map((x) => x.seq));
    const same = page();
    same.older = () => of(A, run(1, 100));
    await same.sync.history(of(A, run(101, 120)));
    assert.equal(same.sync.buffer.size, 120);
  });

  test("streamIdOf reads a non-empty string id, else null", () => {
    assert.equal(streamIdOf(of(A, [])), A);
    for (const bad of [null, {}, { stream: null }, { stream: { id: 7 } }, { stream: { id: "" } }]) {
      assert.equal(streamIdOf(bad), null);
    }
  });
});

describe("backfill over HTTP", () => {
  test("a snapshot shorter than the widest window fetches the older readings once", async () => {
    const p = page({ history: 20 });
    await p.sync.history({ readings: run(101, 120) });
    // 900 s at 1 s would want 881 more; there are only 100 before seq 101.
    assert.deepEqual(p.histories, [{ after: 0, limit: 100 }]);
    assert.deepEqual(seqs(p.sync.buffer), run(1, 120).map((x) => x.seq));
    await p.sync.history({ readings: run(121, 125) });
    assert.equal(p.histories.length, 1, "once");
  });

  test("asks for no more than the window wants, the buffer has room for, or 10,000", async () => {
    const wants = page({ history: 20, interval: 1, span: 60 });
    await wants.sync.history({ readings: run(1001, 1020) });
    assert.deepEqual(wants.histories, [{ after: 959, limit: 41 }], "60 s back from the newest");

    const room = page({ history: 20, capacity: 50 });
    await room.sync.history({ readings: run(1001, 1020) });
    assert.deepEqual(room.histories, [{ after: 970, limit: 30 }]);

    const cap = page({ history: 20, interval: 0.001, capacity: 50000 });
    await cap.sync.history({ readings: run(100001, 100020) });
    assert.deepEqual(cap.histories, [{ after: 100000 - BACKFILL_LIMIT, limit: BACKFILL_LIMIT }]);
  });

  test("nothing to fetch from seq 1, or without room", async () => {
    const first = page();
    await first.sync.history({ readings: run(1, 20) });
    const full = page({ capacity: 20 });
    await full.sync.history({ readings: run(101, 120) });
    assert.deepEqual([first.histories, full.histories], [[], []]);
  });

  test("only readings older than the snapshot are taken", async () => {
    const p = page();
    p.older = { readings: [...run(95, 101), r(150, 3, 0)] };
    await p.sync.history({ readings: run(101, 120) });
    assert.deepEqual(seqs(p.sync.buffer), run(95, 120).map((x) => x.seq));
  });

  test("an answer that contradicts what is held is dropped whole", async () => {
    const p = page();
    p.older = { readings: [...run(95, 100), r(101, 7, 0)] };
    await p.sync.history({ readings: run(101, 120) });
    assert.deepEqual(seqs(p.sync.buffer), run(101, 120).map((x) => x.seq));
  });

  test("so is one of the old stream when the server started over meanwhile", async () => {
    const p = page();
    p.older = () => {
      p.sync.history({ readings: run(1, 5, fresh) }); // before the answer comes
      return { readings: run(1, 100) };
    };
    await p.sync.history({ readings: run(101, 120) });
    assert.deepEqual(p.sync.buffer.after(-Infinity), run(1, 5, fresh));
  });

  test("a failed fetch leaves what is held", async () => {
    const p = page();
    p.older = () => {
      throw new Error("HTTP 503");
    };
    await p.sync.history({ readings: run(101, 120) });
    assert.equal(p.sync.buffer.size, 20);
  });

  test("after starting over the page fills back again", async () => {
    const p = page();
    await p.sync.history({ readings: run(101, 120) });
    await p.sync.history({ readings: run(51, 60, fresh) });
    assert.deepEqual(p.histories, [{ after: 0, limit: 100 }, { after: 0, limit: 50 }]);
  });
});

describe("statistics", () => {
  async function connectedWithStats(p, held = run(1, 10)) {
    p.sync.connected();
    p.sync.history({ readings: held });
    p.timers.advance(0);
    await settle();
  }

  test("fetched on connect, caught up with what is held, then every 5 minutes", async () => {
    const p = page();
    p.stats = statsJson(1, 8); // the server's snapshot is a little older than the readings
    await connectedWithStats(p);
    assert.deepEqual(p.statsCalls.length, 1);
    assert.equal(p.sync.stats.current.throughSeq, 10);
    assert.equal(p.sync.stats.current.count, 10);
    assert.equal(p.sync.stats.error, null);
    assert.deepEqual(p.timers.dueIn(), [STATS_REFRESH_MS]);
    assert.equal(p.events[p.events.length - 1], "changed", "then drawn");
    p.timers.advance(STATS_REFRESH_MS);
    assert.equal(p.statsCalls.length, 2);
  });

  test("each next live reading is counted; a missing one fetches them in 2 s", async () => {
    const p = page();
    await connectedWithStats(p);
    p.sync.reading(r(11));
    assert.equal(p.sync.stats.current.count, 11);
    assert.deepEqual(p.timers.dueIn(), [STATS_REFRESH_MS], "nothing sooner");
    p.sync.reading(r(13));
    assert.equal(p.sync.stats.current.throughSeq, 11);
    assert.deepEqual(p.timers.dueIn(), [STATS_RETRY_MS], "the sooner fetch replaces the later one");
    p.timers.advance(STATS_RETRY_MS);
    await settle();
    assert.equal(p.statsCalls.length, 2);
  });

  test("a snapshot that does not reach what is held is fetched again in 2 s", async () => {
    const p = page();
    p.stats = statsJson(1, 5);
    await connectedWithStats(p, [...run(1, 3), ...run(8, 10)]);
    assert.equal(p.sync.stats.current.throughSeq, 5);
    assert.deepEqual(p.timers.dueIn(), [STATS_RETRY_MS]);
  });

  test("a failed fetch says why and tries again: in 2 s while connected, else in 5 min", async () => {
    const p = page();
    p.stats = () => {
      throw new Error("HTTP 500");
    };
    await connectedWithStats(p);
    assert.equal(p.sync.stats.current, null);
    assert.equal(p.sync.stats.error, "HTTP 500");
    assert.deepEqual(p.timers.dueIn(), [STATS_RETRY_MS]);
    p.connected = false;
    p.timers.advance(STATS_RETRY_MS);
    await settle();
    assert.deepEqual(p.timers.dueIn(), [STATS_REFRESH_MS]);
    p.stats = statsJson(1, 10);
    p.timers.advance(STATS_REFRESH_MS);
    await settle();
    assert.equal(p.sync.stats.error, null, "a success clears the error");
  });

  test("an answer of the wrong shape is an error", async () => {
    const p = page();
    p.stats = { range: { min: 0, max: 10 }, histogram: [1, 2] };
    await connectedWithStats(p);
    assert.equal(p.sync.stats.error, "unexpected answer");
  });

  test("a source without a declared range reads the observed statistics", async () => {
    const p = page({ observed: true });
    p.stats = { kind: "observed", count: 2, mean: 1, stddev: 0, min: 1, max: 1, since_seq: 1, through_seq: 2 };
    await connectedWithStats(p, [r(1, 1), r(2, 1), r(3, 4)]);
    assert.equal(p.sync.stats.current.count, 3);
    assert.equal(p.sync.stats.current.max, 4);
  });

  test("one fetch at a time: one asked for meanwhile comes 2 s later", async () => {
    const p = page();
    let answer;
    p.stats = () => new Promise((resolve) => {
      answer = resolve;
    });
    p.sync.connected();
    p.timers.advance(0);
    assert.equal(p.statsCalls.length, 1);
    p.sync.history({ readings: run(1, 5) });
    p.sync.history({ readings: [fresh(1)] }); // starts over: fetch now
    p.timers.advance(0);
    assert.equal(p.statsCalls.length, 1, "the first is still on its way");
    assert.deepEqual(p.timers.dueIn(), [STATS_RETRY_MS]);
    answer(statsJson(1, 101));
    await settle();
    p.timers.advance(STATS_RETRY_MS);
    assert.equal(p.statsCalls.length, 2);
  });

  test("asking again for a later time changes nothing", () => {
    const p = page();
    p.sync.connected();
    p.sync.connected();
    assert.deepEqual(p.timers.dueIn(), [0]);
    p.timers.advance(0);
    assert.equal(p.statsCalls.length, 1);
  });
});

describe("the browser tests' stories, without the browser", () => {
  test("five live readings dropped on the way are fetched with resume", () => {
    const p = page({ history: 900 });
    p.sync.history({ readings: run(1, 20) });
    for (let seq = 21; seq <= 40; seq += 1) {
      if (seq < 26 || seq > 30) {
        p.sync.reading(r(seq));
      }
    }
    assert.deepEqual(p.sent, [["resume", { after: 25 }]]);
    p.sync.history({ readings: run(26, 40) });
    assert.deepEqual(p.sync.buffer.gaps(), []);
    assert.equal(p.sync.buffer.size, 40);
  });

  test("readings that cannot be recovered stay a gap", () => {
    const p = page({ history: 900 });
    p.sync.history({ readings: run(1, 20) });
    for (let seq = 21; seq <= 40; seq += 1) {
      if (seq < 26 || seq > 30) {
        p.sync.reading(r(seq));
      }
    }
    assert.deepEqual(p.sync.buffer.gaps(), [{ after: 25, before: 31, missing: 5 }]);
    assert.deepEqual(p.resumes(), [25]);
  });
});
