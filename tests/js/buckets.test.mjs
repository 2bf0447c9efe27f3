// Readings in buckets: the server's answer checked, the readings held since counted into
// its newest buckets, runs and gaps, the extent, the nearest item, points per pixel.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  MAX_POINTS, MIN_POINTS, bucketGaps, bucketRuns, bucketsIn, cutAt, cutBefore, emptySeries, extentOf, fold,
  nearestIndex, pointsFor, roundStep, seriesOf, withReadings,
} from "../../static/js/buckets.js";

const b = (t, count, min, max, mean) => ({ t, count, min, max, mean });
const r = (seq, ts, value) => ({ seq, ts, value });

/** What the server would answer for `readings` over [from, to) in buckets of `step` from 0. */
function bucketed(readings, from, to, step) {
  const buckets = new Map();
  for (const { ts, value } of readings) {
    if (ts < from || ts >= to) {
      continue;
    }
    const t = Math.floor(ts / step) * step;
    const held = buckets.get(t) ?? { t, count: 0, min: Infinity, max: -Infinity, sum: 0 };
    held.count += 1;
    held.min = Math.min(held.min, value);
    held.max = Math.max(held.max, value);
    held.sum += value;
    buckets.set(t, held);
  }
  return {
    from, to, step,
    buckets: [...buckets.values()].sort((x, y) => x.t - y.t)
      .map(({ t, count, min, max, sum }) => ({ t, count, min, max, mean: sum / count })),
  };
}

describe("seriesOf", () => {
  test("an answer as the contract has it, buckets sorted", () => {
    const json = { from: 0, to: 120, step: 60, buckets: [b(60, 2, 1, 5, 3), b(0, 1, 4, 4, 4)] };
    assert.deepEqual(seriesOf(json), { from: 0, to: 120, step: 60, buckets: [b(0, 1, 4, 4, 4), b(60, 2, 1, 5, 3)] });
  });

  test("buckets that are not buckets are dropped; answers that are not answers are null", () => {
    const json = { from: 0, to: 120, step: 60, buckets: [b(0, 0, 1, 1, 1), b(60, 1, null, 2, 2), { t: 1 }, null, b(60, 1, 2, 2, 2)] };
    assert.deepEqual(seriesOf(json).buckets, [b(60, 1, 2, 2, 2)]);
    for (const bad of [null, [], "x", { from: 0, to: 1, step: 0, buckets: [] }, { from: 2, to: 1, step: 1, buckets: [] },
      { from: 0, to: 1, step: 1 }, { to: 1, step: 1, buckets: [] }]) {
      assert.equal(seriesOf(bad), null, JSON.stringify(bad));
    }
  });
});

describe("withReadings: the readings held since the answer", () => {
  test("go into the newest bucket, then new ones, exactly as the server would count them", () => {
    const readings = [];
    for (let seq = 1; seq <= 500; seq += 1) {
      readings.push(r(seq, 1000 + seq * 0.7, (seq * 37) % 101));
    }
    const answer = bucketed(readings, 900, 1200.3, 60); // the answer ends mid-bucket
    const merged = withReadings(answer, readings);
    assert.deepEqual(
      merged.buckets.map(({ t, count, min, max }) => ({ t, count, min, max })),
      bucketed(readings, 900, Infinity, 60).buckets.map(({ t, count, min, max }) => ({ t, count, min, max })),
    );
    const expected = bucketed(readings, 900, Infinity, 60).buckets;
    merged.buckets.forEach((bucket, i) => assert.ok(Math.abs(bucket.mean - expected[i].mean) < 1e-9));
    assert.equal(merged.through, 1350);
  });

  test("readings the answer counted (before its `to`) are not counted again", () => {
    const answer = { from: 0, to: 100, step: 60, buckets: [b(60, 3, 1, 9, 5)] };
    const merged = withReadings(answer, [r(1, 99, 50), r(2, 100, 2)]);
    assert.deepEqual(merged.buckets, [b(60, 4, 1, 9, 4.25)]);
  });

  test("nor readings at or after `until` (a fixed view's end)", () => {
    const answer = { from: 0, to: 100, step: 60, buckets: [] };
    assert.deepEqual(withReadings(answer, [r(1, 110, 1), r(2, 130, 2)], 120).buckets, [b(60, 1, 1, 1, 1)]);
  });

  test("the answer itself is left as it came", () => {
    const answer = { from: 0, to: 100, step: 60, buckets: [b(60, 3, 1, 9, 5)] };
    withReadings(answer, [r(1, 101, 50)]);
    assert.deepEqual(answer.buckets, [b(60, 3, 1, 9, 5)]);
  });

  test("a missing stretch stays missing: no bucket", () => {
    const answer = { from: 0, to: 60, step: 10, buckets: [b(50, 1, 5, 5, 5)] };
    const merged = withReadings(answer, [r(7, 61, 1), r(8, 95, 2)]);
    assert.deepEqual(merged.buckets.map((x) => x.t), [50, 60, 90]);
    assert.deepEqual(bucketGaps(merged.buckets, 10), [{ from: 70, to: 90 }]);
  });

  test("a push source's time going back lands in its own bucket", () => {
    const answer = { from: 0, to: 100, step: 10, buckets: [b(90, 1, 5, 5, 5)] };
    const merged = withReadings(answer, [r(1, 125, 1), r(2, 101, 2), r(3, 112, 3), r(4, 126, 7)]);
    assert.deepEqual(merged.buckets, [b(90, 1, 5, 5, 5), b(100, 1, 2, 2, 2), b(110, 1, 3, 3, 3), b(120, 2, 1, 7, 4)]);
  });

  test("an empty series on a round grid holds what the page has, before any answer", () => {
    const series = emptySeries(1007, 8.3);
    assert.deepEqual(series, { from: 1000, to: 1000, step: 10, buckets: [], cut: 1000 });
    assert.deepEqual(withReadings(series, [r(1, 1004, 3), r(2, 1012, 5)]).buckets, [b(1000, 1, 3, 3, 3), b(1010, 1, 5, 5, 5)]);
    assert.equal(roundStep(0.15), 0.2);
    assert.equal(roundStep(3600), 3600);
    assert.equal(roundStep(100000), 172800);
  });
});

describe("cutAt and fold: exactly the readings the answer did not count", () => {
  // A stream of a reading a second (seq s at s + 0.5 s); the server answers up to an edge,
  // counting what it had stored when it answered: everything up to seq 1012.
  const readings = Array.from({ length: 1100 }, (_, i) => r(i + 1, i + 1.5, (i * 7) % 10));
  const stored = readings.filter((x) => x.seq <= 1012);
  const asOf = 1008.5; // the newest reading the page held when it asked (seq 1008)
  const answer = (step, from = 0) => bucketed(stored, from, Math.ceil(asOf / step) * step, step);
  const exact = (step) => bucketed(readings, 0, Infinity, step).buckets;

  test("held readings from the last bucket's start: it is dropped and counted from them", () => {
    const cut = cutAt(answer(60), asOf, 959.5);
    assert.equal(cut.whole, true);
    assert.equal(cut.cut, 960);
    assert.deepEqual(cut.buckets.map((x) => x.t), Array.from({ length: 16 }, (_, i) => i * 60));
    const merged = withReadings(cut, readings.filter((x) => x.ts >= 959.5));
    assert.deepEqual(merged.buckets.map((x) => x.count), exact(60).map((x) => x.count));
  });

  test("an answer that ends at or before asOf is whole as it is", () => {
    const series = bucketed(stored, 0, 960, 60);
    assert.deepEqual(cutAt(series, asOf, 1000), { ...series, cut: 960, whole: true });
  });

  test("held readings that do not reach back: a finer answer for the last bucket, folded", () => {
    const heldFrom = 999.5;
    const main = cutAt(answer(600), asOf, heldFrom);
    assert.equal(main.whole, false);
    // What the loader asks next: [600, asOf) at a finer step.
    const fine = cutAt(bucketed(stored, 600, 1010, 10), asOf, heldFrom);
    assert.equal(fine.whole, true);
    assert.equal(fine.cut, 1000);
    const series = fold(cutBefore(answer(600), 600), fine);
    const merged = withReadings(series, readings.filter((x) => x.ts >= heldFrom));
    const shape = (buckets) => buckets.map(({ t, count, min, max }) => ({ t, count, min, max }));
    assert.deepEqual(shape(merged.buckets), shape(exact(600)));
    merged.buckets.forEach((x, i) => assert.ok(Math.abs(x.mean - exact(600)[i].mean) < 1e-9));
  });

  test("not whole: the answer's buckets stay, the readings after asOf count", () => {
    const main = cutAt(answer(600), asOf, 1008.5);
    assert.equal(main.whole, false);
    assert.ok(main.cut > asOf && main.cut < asOf + 1e-3);
    const merged = withReadings(main, readings.filter((x) => x.ts >= asOf));
    // seqs 1009..1012 were counted by the server and again here: four too many, until the next answer.
    assert.equal(extentOf(merged.buckets).count, 1100 + 4);
  });
});

describe("runs, gaps, extent", () => {
  const buckets = [b(0, 2, 1, 3, 2), b(10, 1, 0, 0, 0), b(40, 3, 5, 9, 7), b(50, 1, 4, 4, 4), b(80, 1, 1, 1, 1)];

  test("adjacent buckets form a run; an empty bucket breaks it and is a gap", () => {
    assert.deepEqual(bucketRuns(buckets, 10).map((run) => run.map((x) => x.t)), [[0, 10], [40, 50], [80]]);
    assert.deepEqual(bucketGaps(buckets, 10), [{ from: 20, to: 40 }, { from: 60, to: 80 }]);
    assert.deepEqual(bucketRuns([], 10), []);
  });

  test("the buckets overlapping a stretch", () => {
    assert.deepEqual(bucketsIn(buckets, 10, 15, 45).map((x) => x.t), [10, 40]);
  });

  test("count, min, max and mean over buckets", () => {
    assert.deepEqual(extentOf(buckets), { count: 8, min: 0, max: 9, mean: (4 + 0 + 21 + 4 + 1) / 8 });
    assert.deepEqual(extentOf([]), { count: 0, min: null, max: null, mean: null });
  });
});

test("nearestIndex", () => {
  const items = [{ x: 0 }, { x: 10 }, { x: 20 }];
  const at = (item) => item.x;
  assert.equal(nearestIndex(items, -5, at), 0);
  assert.equal(nearestIndex(items, 4, at), 0);
  assert.equal(nearestIndex(items, 6, at), 1);
  assert.equal(nearestIndex(items, 99, at), 2);
  assert.equal(nearestIndex([], 1, at), -1);
});

test("points from the plot's width: a bucket per 2 px, within the server's bounds", () => {
  assert.equal(pointsFor(860), 430);
  assert.equal(pointsFor(3), MIN_POINTS);
  assert.equal(pointsFor(100000), MAX_POINTS);
  assert.equal(pointsFor(NaN), MIN_POINTS);
});
