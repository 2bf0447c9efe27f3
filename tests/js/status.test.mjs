// What the page says about its state: the connection's word and detail, freshness, the
// chart's caption, the pause note, the statistics' note and verdict.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  ConnectionStatus, OFFLINE_AFTER_MS, chartCaption, freshness, missingIn, pauseNote, statsNote, verdict,
} from "../../static/js/status.js";

const r = (seq, value = seq % 11, ts = 1000 + seq) => ({ seq, value, ts });

function status() {
  const s = { now: 1_000_000, online: true };
  s.status = new ConnectionStatus({ now: () => s.now, online: () => s.online });
  return s;
}

describe("ConnectionStatus", () => {
  test("offline and connecting until the first connect, then live with no detail", () => {
    const s = status();
    assert.equal(s.status.name, "offline");
    assert.equal(s.status.refresh(), "offline");
    assert.equal(s.status.detail(), "connecting…");
    s.status.connected();
    assert.equal(s.status.name, "live");
    assert.equal(s.status.refresh(), "live");
    assert.equal(s.status.detail(), "");
  });

  test("a first connect that fails stays offline while it retries", () => {
    const s = status();
    s.status.retrying(500);
    assert.equal(s.status.name, "offline");
    assert.equal(s.status.detail(), "lost 0 s ago · next try in 1 s");
  });

  test("lost: reconnecting, with when it was lost and when the next try is", () => {
    const s = status();
    s.status.connected();
    s.status.disconnected();
    assert.equal(s.status.name, "live", "until the retry is scheduled");
    s.now += 100;
    s.status.retrying(2500);
    assert.equal(s.status.name, "reconnecting");
    assert.equal(s.status.lostAt, 1_000_000, "lost when the connection went, not at the retry");
    assert.equal(s.status.detail(), "lost 0 s ago · next try in 3 s");
    s.now += 2500;
    assert.equal(s.status.detail(), "lost 2 s ago · trying now…");
  });

  test("reconnecting turns offline after 30 s", () => {
    const s = status();
    s.status.connected();
    s.status.disconnected();
    s.status.retrying(1000);
    s.now += OFFLINE_AFTER_MS - 1;
    assert.equal(s.status.refresh(), "reconnecting");
    s.now += 1;
    assert.equal(s.status.refresh(), "offline");
    assert.equal(s.status.name, "offline");
    s.status.connected();
    assert.deepEqual([s.status.name, s.status.lostAt, s.status.nextTryAt], ["live", null, null]);
  });

  test("without a network: offline, and only the next try is said", () => {
    const s = status();
    s.status.connected();
    s.status.disconnected();
    s.online = false;
    s.status.retrying(4000);
    assert.equal(s.status.name, "offline");
    assert.equal(s.status.detail(), "no network · next try in 4 s");
    s.online = true;
    assert.equal(s.status.refresh(), "reconnecting", "the network is back");
  });

  test("a retry without a disconnect (a failed reconnect) keeps the first loss", () => {
    const s = status();
    s.status.connected();
    s.status.disconnected();
    s.status.retrying(500);
    s.now += 10000;
    s.status.retrying(1000);
    assert.equal(s.status.lostAt, 1_000_000);
    assert.equal(s.status.detail(), "lost 10 s ago · next try in 1 s");
  });
});

describe("freshness", () => {
  test("before any reading: stale unless live", () => {
    assert.deepEqual(freshness(null, 5000, 1, true), { text: "no readings yet", stale: false });
    assert.deepEqual(freshness(null, 5000, 1, false), { text: "no readings yet", stale: true });
  });

  test("stale after 3 intervals, at least 5 s", () => {
    assert.deepEqual(freshness(0, 5000, 1, true), { text: "updated 5 s ago", stale: false });
    assert.deepEqual(freshness(0, 5001, 1, true), { text: "updated 5 s ago — no new readings", stale: true });
    assert.deepEqual(freshness(0, 30000, 10, false), { text: "updated 30 s ago", stale: false });
    assert.deepEqual(freshness(0, 200000, 10, true), {
      text: "updated 3 min 20 s ago — no new readings", stale: true,
    });
  });
});

describe("chartCaption", () => {
  test("no readings", () => {
    assert.equal(chartCaption([], [], 300), "Last 5 min: 0 readings");
  });

  test("the readings shown: count, seqs, lowest and highest", () => {
    const readings = [r(3, 7), r(4, 2.5), r(5, 9)];
    assert.equal(chartCaption(readings, [], 60), "Last 1 min: 3 readings (seq 3–5), lowest 2.5, highest 9");
  });

  test("only the gaps within the readings shown, with the readings they miss", () => {
    const readings = [r(10), r(11), r(17), r(20)];
    const gaps = [
      { after: 2, before: 9, missing: 6 }, // before the window
      { after: 11, before: 17, missing: 5 },
      { after: 17, before: 20, missing: 2 },
    ];
    assert.equal(missingIn(gaps), 13);
    const text = chartCaption(readings, gaps, 900);
    assert.ok(text.startsWith("Last 15 min: 4 readings (seq 10–20)"), text);
    assert.ok(text.endsWith("; 2 gaps (7 missing readings, shaded)"), text);
    assert.ok(chartCaption(readings, gaps.slice(0, 2), 900).endsWith("; 1 gap (5 missing readings, shaded)"));
  });

  test("counts are written with separators", () => {
    const readings = Array.from({ length: 1200 }, (_, i) => r(i + 1));
    assert.ok(chartCaption(readings, [], 900).startsWith("Last 15 min: 1,200 readings"));
    const gaps = [{ after: 1, before: 2000, missing: 1998 }];
    const wide = [r(1), r(2000)];
    assert.ok(chartCaption(wide, gaps, 900).endsWith("1 gap (1,998 missing readings, shaded)"));
  });

  test("a zoomed stretch names itself", () => {
    assert.equal(chartCaption([r(3, 7)], [], "Mon 3 Jun 21:58:00 to 22:00:00 (2 min)"),
      "Mon 3 Jun 21:58:00 to 22:00:00 (2 min): 1 readings (seq 3–3), lowest 7, highest 7");
  });
});

describe("pauseNote", () => {
  test("how many newer readings arrived while frozen", () => {
    assert.equal(pauseNote(40, 52, 100),
      "Paused: the view is frozen at seq 40. 12 newer readings are kept meanwhile; press Resume to catch up.");
  });

  test("frozen before any reading: all held are newer", () => {
    assert.equal(pauseNote(null, 7, 7),
      "Paused: the view is frozen at seq –. 7 newer readings are kept meanwhile; press Resume to catch up.");
  });
});

describe("statsNote and verdict", () => {
  test("what the statistics cover", () => {
    const stats = { throughSeq: 120, lo: 0, hi: 100 };
    assert.equal(statsNote(stats, { observed: false, error: null, recent: 0 }), "Through seq 120 · 100 degrees of freedom");
    assert.equal(statsNote({ throughSeq: null }, { observed: true, error: null, recent: 1500 }),
      "Through seq – · no uniformity test for this source; the histogram is of the 1,500 most recent readings");
  });

  test("none yet: fetching, or why they are unavailable", () => {
    assert.equal(statsNote(null, { observed: false, error: null, recent: 0 }), "Fetching statistics…");
    assert.equal(statsNote(null, { observed: true, error: "HTTP 503", recent: 9 }),
      "Statistics are unavailable right now (HTTP 503); trying again.");
  });

  test("the verdict of the p-value, none for a source without a range", () => {
    assert.equal(verdict(null, false), "");
    assert.equal(verdict(0.0099, false), "unusually uneven for uniform numbers");
    assert.equal(verdict(0.01, false), "consistent with uniform numbers");
    assert.equal(verdict(0.5, true), "not tested: this source has no declared range");
  });
});
