// Which bucket answer the chart draws and when the page asks the server again.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { KEPT, REFRESH_MAX_S, REFRESH_MIN_S, RETRY_MS, SeriesLoader, refreshAfter, requestFor } from "../../static/js/series.js";
import { fixedView, liveView } from "../../static/js/view.js";
import { FakeTimers } from "./fake_timers.mjs";

const NOW = 1_717_452_000;
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** A loader whose fetches wait until the test answers them. */
function loader() {
  const s = { timers: new FakeTimers(NOW * 1000), asked: [], changes: 0 };
  s.loader = new SeriesLoader({
    getSeries: (from, to, points) => new Promise((resolve, reject) => {
      s.asked.push({ from, to, points, resolve, reject });
    }),
    now: () => s.timers.now,
    timers: s.timers,
    changed: () => { s.changes += 1; },
  });
  return s;
}

const answer = (from, to, step, buckets = [{ t: from, count: 1, min: 1, max: 1, mean: 1 }]) => ({ from, to, step, buckets });
const hour = () => requestFor(liveView(3600), { from: NOW - 3600, to: NOW, live: true }, 400);
const week = () => requestFor(liveView(604800), { from: NOW - 604800, to: NOW, live: true }, 400);
const held = (extra = {}) => ({ serverNow: NOW, heldFrom: NOW - 900, fallbackFrom: NOW - 3600, fallbackStep: 10, ...extra });

describe("requestFor", () => {
  test("a live view asks up to the server's now and keeps its key as time moves", () => {
    const a = requestFor(liveView(3600), { from: NOW - 3600, to: NOW, live: true }, 400);
    const b = requestFor(liveView(3600), { from: NOW - 3590, to: NOW + 10, live: true }, 400);
    assert.equal(a.key, b.key);
    assert.deepEqual({ from: a.from, to: a.to, live: a.live }, { from: NOW - 3600, to: null, live: true });
  });

  test("a fixed view asks for its stretch; all from the start", () => {
    const fixed = requestFor(fixedView(NOW - 100, NOW - 50), { from: NOW - 100, to: NOW - 50, live: false }, 10);
    assert.deepEqual({ from: fixed.from, to: fixed.to, live: fixed.live }, { from: NOW - 100, to: NOW - 50, live: false });
    const all = requestFor(liveView(null), { from: NOW - 9999, to: NOW, live: true }, 10);
    assert.equal(all.from, null);
    assert.notEqual(all.key, requestFor(liveView(9999), { from: NOW - 9999, to: NOW, live: true }, 10).key);
  });

  test("refreshAfter: a bucket's width, between a minute and five", () => {
    assert.equal(refreshAfter(1), REFRESH_MIN_S);
    assert.equal(refreshAfter(120), 120);
    assert.equal(refreshAfter(3600), REFRESH_MAX_S);
  });
});

describe("SeriesLoader", () => {
  test("asks once, draws what the page holds meanwhile, then the answer", async () => {
    const s = loader();
    const first = s.loader.show(hour(), held());
    assert.deepEqual(first.series.buckets, []);
    assert.equal(first.series.from, NOW - 3600);
    assert.equal(first.exact, false);
    assert.equal(first.loading, true);
    s.loader.show(hour(), held());
    assert.equal(s.asked.length, 1, "one fetch in flight");
    assert.deepEqual(s.asked[0], { ...s.asked[0], from: NOW - 3600, to: NOW, points: 400 });
    s.asked[0].resolve(answer(NOW - 3600, NOW, 10));
    await settle();
    assert.equal(s.changes, 1);
    const shown = s.loader.show(hour(), held());
    assert.equal(shown.exact, true);
    assert.equal(shown.loading, false);
    assert.equal(shown.series.step, 10);
    assert.equal(s.asked.length, 1);
  });

  test("switching views keeps the old answer on screen until the new one comes; back is instant", async () => {
    const s = loader();
    s.loader.show(hour(), held());
    s.asked[0].resolve(answer(NOW - 3600, NOW, 10));
    await settle();
    const switching = s.loader.show(week(), held());
    assert.equal(switching.series.step, 10, "the hour's answer, still drawn");
    assert.equal(switching.exact, false);
    assert.equal(s.asked.length, 2);
    s.asked[1].resolve(answer(NOW - 604800, NOW, 1800));
    await settle();
    assert.equal(s.loader.show(week(), held()).series.step, 1800);
    const back = s.loader.show(hour(), held());
    assert.equal(back.exact, true);
    assert.equal(back.series.step, 10);
    assert.equal(s.asked.length, 2, "no fetch: the hour's answer was kept");
  });

  test("an answer that comes after the view changed is kept, not drawn", async () => {
    const s = loader();
    s.loader.show(hour(), held());
    s.loader.show(week(), held());
    s.asked[0].resolve(answer(NOW - 3600, NOW, 10));
    await settle();
    const shown = s.loader.show(week(), held());
    assert.equal(shown.exact, false);
    assert.equal(shown.series.step, 10, "drawn only as the stand-in until the week's comes");
    assert.equal(s.loader.show(hour(), held()).exact, true);
  });

  test("a live answer is fetched again once the view slid a bucket (a minute at least)", async () => {
    const s = loader();
    s.loader.show(hour(), held());
    s.asked[0].resolve(answer(NOW - 3600, NOW, 10));
    await settle();
    s.loader.show(hour(), held({ serverNow: NOW + REFRESH_MIN_S - 1 }));
    assert.equal(s.asked.length, 1);
    const refreshing = s.loader.show(hour(), held({ serverNow: NOW + REFRESH_MIN_S }));
    assert.equal(s.asked.length, 2);
    assert.equal(refreshing.exact, true, "the older answer stays on screen meanwhile");
    assert.equal(s.asked[1].from, NOW - 3600, "the request as the page makes it now");
  });

  test("a week's answer: every 5 minutes at most, however wide its buckets", async () => {
    const s = loader();
    s.loader.show(week(), held());
    s.asked[0].resolve(answer(NOW - 604800, NOW, 1800));
    await settle();
    s.loader.show(week(), held({ serverNow: NOW + REFRESH_MAX_S - 1 }));
    assert.equal(s.asked.length, 1);
    s.loader.show(week(), held({ serverNow: NOW + REFRESH_MAX_S }));
    assert.equal(s.asked.length, 2);
  });

  test("fetched again soon when the readings held no longer reach back to its end", async () => {
    const s = loader();
    s.loader.show(hour(), held());
    s.asked[0].resolve(answer(NOW - 3600, NOW, 10));
    await settle();
    s.loader.show(hour(), held({ serverNow: NOW + 1, heldFrom: NOW + 1 }));
    assert.equal(s.asked.length, 1);
    s.loader.show(hour(), held({ serverNow: NOW + 2, heldFrom: NOW + 1 }));
    assert.equal(s.asked.length, 2);
  });

  test("a fixed view's answer is final", async () => {
    const s = loader();
    const bounds = { from: NOW - 7200, to: NOW - 3600, live: false };
    const request = requestFor(fixedView(bounds.from, bounds.to), bounds, 100);
    s.loader.show(request, held());
    assert.deepEqual({ from: s.asked[0].from, to: s.asked[0].to }, { from: NOW - 7200, to: NOW - 3600 });
    s.asked[0].resolve(answer(NOW - 7200, NOW - 3600, 60));
    await settle();
    s.loader.show(request, held({ serverNow: NOW + 86400, heldFrom: NOW + 86000 }));
    assert.equal(s.asked.length, 1);
  });

  test("asks up to the newest reading held; the bucket that may hold later ones is counted from the held", async () => {
    const s = loader();
    const asOf = NOW - 2.5;
    s.loader.show(hour(), held({ heldTo: asOf, heldFrom: NOW - 900 }));
    assert.equal(s.asked[0].to, asOf);
    // The server snaps `to` up to NOW, an edge; its last bucket [NOW - 10, NOW) may hold
    // readings after asOf: dropped, the held readings count from NOW - 10.
    s.asked[0].resolve(answer(NOW - 3600, NOW, 10, [
      { t: NOW - 3600, count: 10, min: 1, max: 9, mean: 5 }, { t: NOW - 10, count: 9, min: 1, max: 9, mean: 5 }]));
    await settle();
    const { series } = s.loader.show(hour(), held({ heldTo: asOf }));
    assert.deepEqual(series.buckets.map((b) => b.t), [NOW - 3600]);
    assert.equal(series.cut, NOW - 10);
    assert.equal(s.asked.length, 1);
  });

  test("a last bucket wider than the readings held: a finer answer for it, folded in", async () => {
    const s = loader();
    const asOf = NOW - 2.5;
    const request = week();
    s.loader.show(request, held({ heldTo: asOf, heldFrom: NOW - 300 }));
    s.asked[0].resolve(answer(NOW - 604800, NOW + 1200, 1800, [
      { t: NOW - 604800, count: 1, min: 1, max: 1, mean: 1 }, { t: NOW - 600, count: 598, min: 0, max: 9, mean: 4 }]));
    await settle();
    assert.equal(s.asked.length, 2);
    assert.deepEqual({ from: s.asked[1].from, to: s.asked[1].to, points: s.asked[1].points },
      { from: NOW - 600, to: asOf, points: 2000 });
    assert.equal(s.loader.show(request, held({ heldTo: asOf })).exact, false, "not until the finer answer is in");
    s.asked[1].resolve(answer(NOW - 600, NOW - 2, 1, [
      { t: NOW - 600, count: 1, min: 3, max: 3, mean: 3 }, { t: NOW - 5, count: 1, min: 7, max: 7, mean: 7 },
      { t: NOW - 3, count: 1, min: 9, max: 9, mean: 9 }]));
    await settle();
    const { series, exact } = s.loader.show(request, held({ heldTo: asOf }));
    assert.equal(exact, true);
    assert.deepEqual(series.buckets, [
      { t: NOW - 604800, count: 1, min: 1, max: 1, mean: 1 }, { t: NOW - 600, count: 2, min: 3, max: 7, mean: 5 }]);
    assert.equal(series.cut, NOW - 3, "the held readings count from the fine answer's last bucket");
  });

  test("inexact while the held readings do not reach back; asked again once they do", async () => {
    const s = loader();
    const asOf = NOW - 2.5;
    s.loader.show(hour(), held({ heldTo: asOf, heldFrom: asOf }));
    s.asked[0].resolve(answer(NOW - 3600, NOW, 10));
    await settle();
    s.asked[1].resolve(answer(NOW - 10, NOW - 2, 1));
    await settle();
    assert.equal(s.loader.show(hour(), held({ heldTo: asOf, heldFrom: asOf })).series.whole, false);
    assert.equal(s.asked.length, 2);
    s.loader.show(hour(), held({ heldTo: asOf, heldFrom: NOW - 900 })); // the snapshot came
    assert.equal(s.asked.length, 3);
  });

  test("a failure is said, and tried again after RETRY_MS", async () => {
    const s = loader();
    s.loader.show(hour(), held());
    s.asked[0].reject(new Error("HTTP 503"));
    await settle();
    const failed = s.loader.show(hour(), held());
    assert.equal(failed.error, "HTTP 503");
    assert.equal(s.asked.length, 1);
    const changes = s.changes;
    s.timers.advance(RETRY_MS);
    assert.equal(s.changes, changes + 1, "a redraw when the retry is due");
    s.loader.show(hour(), held());
    assert.equal(s.asked.length, 2);
    s.asked[1].resolve(answer(NOW - 3600, NOW, 10));
    await settle();
    assert.equal(s.loader.show(hour(), held()).error, null);
  });

  test("an answer that is not one is a failure", async () => {
    const s = loader();
    s.loader.show(hour(), held());
    s.asked[0].resolve({ error: "nope" });
    await settle();
    assert.equal(s.loader.show(hour(), held()).error, "unexpected answer");
  });

  test("clear() forgets every answer and drops the ones on their way", async () => {
    const s = loader();
    s.loader.show(hour(), held());
    s.asked[0].resolve(answer(NOW - 3600, NOW, 10));
    await settle();
    s.loader.show(week(), held());
    s.loader.clear();
    s.asked[1].resolve(answer(NOW - 604800, NOW, 1800));
    await settle();
    const after = s.loader.show(hour(), held());
    assert.equal(after.exact, false);
    assert.deepEqual(after.series.buckets, [], "not even the stand-in is another stream's");
    assert.equal(s.asked.length, 3);
  });

  test(`the answers of the last ${KEPT} views are kept`, async () => {
    const s = loader();
    for (let i = 0; i <= KEPT; i += 1) {
      const bounds = { from: NOW - 7200 - i, to: NOW - 3600, live: false };
      s.loader.show(requestFor(fixedView(bounds.from, bounds.to), bounds, 100), held());
      s.asked[i].resolve(answer(bounds.from, bounds.to, 60));
      await settle();
    }
    const oldest = { from: NOW - 7200, to: NOW - 3600, live: false };
    s.loader.show(requestFor(fixedView(oldest.from, oldest.to), oldest, 100), held());
    assert.equal(s.asked.length, KEPT + 2, "the first was dropped: fetched again");
  });

  test("all: from the start; the first bucket says where the stream begins", async () => {
    const s = loader();
    const all = requestFor(liveView(null), { from: NOW - 604800, to: NOW, live: true }, 100);
    s.loader.show(all, held());
    assert.equal(s.asked[0].from, 0);
    const start = NOW - 30 * 86400;
    s.asked[0].resolve(answer(0, NOW, 86400, [{ t: start, count: 5, min: 1, max: 2, mean: 1.5 }]));
    await settle();
    assert.equal(s.loader.start, start);
    // 30 days in 100 points: buckets of a day are too wide; asked again from the start.
    const again = s.loader.show(all, held());
    assert.equal(again.series.step, 86400, "the coarse answer stands in meanwhile");
    assert.equal(s.asked.length, 2);
    assert.equal(s.asked[1].from, start);
    s.asked[1].resolve(answer(start, NOW, 43200 / 2, [{ t: start, count: 5, min: 1, max: 2, mean: 1.5 }]));
    await settle();
    assert.equal(s.loader.show(all, held()).exact, true);
    assert.equal(s.asked.length, 2);
  });
});
