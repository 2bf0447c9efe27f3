// Statistics of a source without a declared range, and the bins its histogram uses.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { formatValue } from "../../static/js/format.js";
import { ReadingBuffer } from "../../static/js/readings.js";
import { ObservedStats, binned } from "../../static/js/stats.js";

const close = (a, b) => assert.ok(Math.abs(a - b) < 1e-9, `${a} != ${b}`);

describe("ObservedStats", () => {
  const server = { kind: "observed", count: 2, mean: 2, stddev: 1, min: 1, max: 3, since_seq: 1, through_seq: 2 };

  test("continues the server's numbers with Welford's update", () => {
    const stats = ObservedStats.fromServer(server);
    assert.equal(stats.add({ seq: 3, value: 5.5, ts: 0 }), "added");
    const s = stats.summary();
    assert.equal(s.count, 3);
    close(s.mean, (1 + 3 + 5.5) / 3);
    const m = s.mean;
    close(s.stddev, Math.sqrt(((1 - m) ** 2 + (3 - m) ** 2 + (5.5 - m) ** 2) / 3));
    assert.equal(s.max, 5.5);
    assert.equal(s.chiSquare, null);
    assert.equal(s.pValue, null);
  });

  test("old readings are skipped and a gap is reported", () => {
    const stats = ObservedStats.fromServer(server);
    assert.equal(stats.add({ seq: 2, value: 9, ts: 0 }), "old");
    assert.equal(stats.add({ seq: 4, value: 9, ts: 0 }), "gap");
    assert.equal(stats.count, 2);
  });

  test("refuses a uniform answer or a broken one", () => {
    assert.equal(ObservedStats.fromServer({ ...server, kind: "uniform" }), null);
    assert.equal(ObservedStats.fromServer({ ...server, mean: "2" }), null);
    assert.equal(ObservedStats.fromServer({ kind: "observed", count: 0 }).summary().mean, null);
  });
});

describe("binned", () => {
  test("a bin per integer for a few integers", () => {
    assert.deepEqual(binned([3, 5, 5]).counts, [1, 0, 2]);
  });

  test("twenty equal bins over floats, every value counted", () => {
    const values = Array.from({ length: 101 }, (_, i) => i / 10 + 0.01);
    const { edges, counts } = binned(values);
    assert.equal(counts.length, 20);
    assert.equal(edges.length, 21);
    assert.equal(counts.reduce((a, b) => a + b, 0), 101);
    assert.ok(edges[0] <= 0.01 && edges[20] >= 10.01);
  });

  test("one value, huge values, none", () => {
    assert.deepEqual(binned([2.5]).counts, [1]);
    assert.deepEqual(binned([4503599627370498.5]).counts, [1]);
    assert.deepEqual(binned([]), { edges: [], counts: [] });
  });
});

test("formatValue shows integers as they are and floats to six digits", () => {
  assert.equal(formatValue(42), "42");
  assert.equal(formatValue(1.625), "1.625");
  assert.equal(formatValue(0.1 + 0.2), "0.3");
  assert.equal(formatValue(null), "–");
});

test("ReadingBuffer.latest gives the newest n", () => {
  const buffer = new ReadingBuffer(10);
  buffer.merge([1, 2, 3].map((seq) => ({ seq, value: seq, ts: seq })));
  assert.deepEqual(buffer.latest(2).map((r) => r.seq), [2, 3]);
  assert.deepEqual(buffer.latest(0), []);
});
