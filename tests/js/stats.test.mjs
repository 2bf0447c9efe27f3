// Stream statistics: derived from the histogram, kept in step reading by reading.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { StreamStats, chiSquarePValue, logGamma, summarize } from "../../static/js/stats.js";

const close = (actual, expected, tolerance = 1e-9) =>
  assert.ok(Math.abs(actual - expected) <= tolerance * Math.max(1, Math.abs(expected)), `${actual} != ${expected}`);

describe("summarize", () => {
  test("count, min, max, mean and population standard deviation", () => {
    // values 2, 4, 4, 4, 5, 5, 7, 9 over [0, 9]: mean 5, population sd 2
    const histogram = [0, 0, 1, 0, 3, 2, 0, 1, 0, 1];
    const s = summarize(histogram, 0);
    assert.equal(s.count, 8);
    assert.equal(s.min, 2);
    assert.equal(s.max, 9);
    close(s.mean, 5);
    close(s.stddev, 2);
  });

  test("an offset range", () => {
    const s = summarize([1, 0, 1], 10);
    assert.equal(s.min, 10);
    assert.equal(s.max, 12);
    close(s.mean, 11);
  });

  test("nothing counted yet", () => {
    assert.deepEqual(summarize([0, 0], 0), {
      count: 0, min: null, max: null, mean: null, stddev: null, chiSquare: null, pValue: null,
    });
  });

  test("chi-square against the uniform expectation", () => {
    const s = summarize([10, 20, 30], 0); // expected 20 each: (100 + 0 + 100) / 20 = 10
    close(s.chiSquare, 10);
    close(s.pValue, Math.exp(-5)); // chi-square with 2 dof: p = exp(-x/2)
  });
});

describe("chiSquarePValue", () => {
  // Reference values: R's pchisq(x, df, lower.tail = FALSE).
  const cases = [
    [3.84145882069412, 1, 0.05],
    [6.63489660102121, 1, 0.01],
    [124.342, 100, 0.05],
    [100, 100, 0.481192],
    [135.807, 100, 0.01],
    [2, 2, Math.exp(-1)],
    [50, 100, 0.99999],
  ];
  for (const [x, dof, p] of cases) {
    test(`x=${x}, dof=${dof}`, () => {
      close(chiSquarePValue(x, dof), p, 2e-5);
    });
  }

  test("zero statistic means p = 1", () => {
    assert.equal(chiSquarePValue(0, 100), 1);
  });

  test("stays within [0, 1] for extreme inputs", () => {
    for (const x of [1e-9, 1e-3, 1, 1e3, 1e5]) {
      const p = chiSquarePValue(x, 100);
      assert.ok(p >= 0 && p <= 1, `${p}`);
    }
  });

  test("logGamma matches factorials", () => {
    close(logGamma(1), 0, 1e-12);
    close(logGamma(5), Math.log(24), 1e-12);
    close(logGamma(50.5), 146.5192554907206, 1e-12); // Python math.lgamma
    close(logGamma(0.5), Math.log(Math.sqrt(Math.PI)), 1e-12);
  });
});

describe("StreamStats", () => {
  const server = {
    count: 3, min: 1, max: 2, mean: 4 / 3, stddev: 0.47, histogram: [0, 2, 1],
    chi_square: 2, p_value: 0.36, range: { min: 0, max: 2 }, since_seq: 10,
  };

  test("fromServer reads the histogram and the seq it covers", () => {
    const stats = StreamStats.fromServer(server);
    assert.equal(stats.count, 3);
    assert.equal(stats.throughSeq, 12); // seqs 10, 11, 12
    assert.deepEqual(stats.histogram, [0, 2, 1]);
  });

  test("an explicit through_seq wins", () => {
    assert.equal(StreamStats.fromServer({ ...server, through_seq: 40 }).throughSeq, 40);
  });

  test("an empty stream", () => {
    const stats = StreamStats.fromServer({ ...server, count: 0, histogram: [0, 0, 0], since_seq: null });
    assert.equal(stats.throughSeq, null);
    assert.equal(stats.add({ seq: 7, value: 1 }), "added");
    assert.equal(stats.throughSeq, 7);
  });

  test("rejects an answer of the wrong shape", () => {
    assert.equal(StreamStats.fromServer({}), null);
    assert.equal(StreamStats.fromServer({ ...server, histogram: [1, 2] }), null);
  });

  test("adds the next reading, skips counted ones, stops at a gap", () => {
    const stats = StreamStats.fromServer(server);
    assert.equal(stats.add({ seq: 12, value: 0 }), "old");
    assert.equal(stats.add({ seq: 13, value: 0 }), "added");
    assert.equal(stats.add({ seq: 15, value: 0 }), "gap");
    assert.deepEqual(stats.histogram, [1, 2, 1]);
    assert.equal(stats.catchUp([{ seq: 14, value: 2 }, { seq: 16, value: 2 }]), false);
    assert.equal(stats.throughSeq, 14);
  });

  test("clone is independent", () => {
    const stats = StreamStats.fromServer(server);
    const copy = stats.clone();
    stats.add({ seq: 13, value: 0 });
    assert.equal(copy.count, 3);
    assert.equal(copy.throughSeq, 12);
  });
});
