// The reading buffer: merge by seq, de-duplicate, bounded, gaps.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ReadingBuffer, asReading, findGaps, segments } from "../../static/js/readings.js";

const r = (seq, value = seq % 101, ts = 1000 + seq) => ({ seq, value, ts });
const seqs = (readings) => readings.map((x) => x.seq);

describe("asReading", () => {
  test("keeps seq, value and ts", () => {
    assert.deepEqual(asReading({ seq: 1, value: 2, ts: 3.5, extra: 1 }), { seq: 1, value: 2, ts: 3.5 });
  });

  for (const bad of [null, 1, {}, { seq: 1.5, value: 1, ts: 1 }, { seq: 1, value: "2", ts: 1 }, { seq: 1, value: 2 }]) {
    test(`rejects ${JSON.stringify(bad)}`, () => {
      assert.equal(asReading(bad), null);
    });
  }
});

describe("ReadingBuffer", () => {
  test("merges out of order and drops duplicates", () => {
    const buffer = new ReadingBuffer(100);
    assert.equal(buffer.merge([r(1), r(2), r(5)]), 3);
    assert.equal(buffer.merge([r(4), r(2), r(3), r(5), r(6)]), 3);
    assert.deepEqual(seqs(buffer.after(0)), [1, 2, 3, 4, 5, 6]);
    assert.equal(buffer.lastSeq, 6);
  });

  test("merges big batches the same way as single readings", () => {
    const batch = new ReadingBuffer(1000);
    const single = new ReadingBuffer(1000);
    const readings = [];
    for (let i = 0; i < 400; i += 1) {
      readings.push(r(1 + ((i * 37) % 300))); // shuffled, with duplicates
    }
    batch.merge([r(5), r(150), r(400)]);
    single.merge([r(5), r(150), r(400)]);
    const added = batch.merge(readings);
    let addedOneByOne = 0;
    for (const reading of readings) {
      addedOneByOne += single.merge([reading]);
    }
    assert.equal(added, addedOneByOne);
    assert.deepEqual(seqs(batch.after(0)), seqs(single.after(0)));
    assert.deepEqual(seqs(batch.after(0)), [...Array.from({ length: 300 }, (_, k) => k + 1), 400]);
  });

  test("a big batch past capacity keeps the newest", () => {
    const buffer = new ReadingBuffer(10);
    buffer.merge(Array.from({ length: 50 }, (_, i) => r(i + 1)));
    assert.deepEqual(seqs(buffer.after(0)), [41, 42, 43, 44, 45, 46, 47, 48, 49, 50]);
  });

  test("never holds more than its capacity, dropping the oldest", () => {
    const buffer = new ReadingBuffer(10);
    for (let seq = 1; seq <= 1000; seq += 1) {
      buffer.merge([r(seq)]);
    }
    assert.equal(buffer.size, 10);
    assert.equal(buffer.first.seq, 991);
    buffer.merge(Array.from({ length: 50 }, (_, i) => r(2000 + i)));
    assert.equal(buffer.size, 10);
    assert.equal(buffer.first.seq, 2040);
  });

  test("gaps lists what is missing between held readings", () => {
    const buffer = new ReadingBuffer(100);
    buffer.merge([r(1), r(2), r(6), r(7), r(9)]);
    assert.deepEqual(buffer.gaps(), [
      { after: 2, before: 6, missing: 3 },
      { after: 7, before: 9, missing: 1 },
    ]);
    buffer.merge([r(3), r(4), r(5), r(8)]);
    assert.deepEqual(buffer.gaps(), []);
  });

  test("window picks readings by time and stops at a seq", () => {
    const buffer = new ReadingBuffer(100);
    buffer.merge([1, 2, 3, 4, 5, 6].map((seq) => r(seq)));
    assert.deepEqual(seqs(buffer.window(1003)), [3, 4, 5, 6]);
    assert.deepEqual(seqs(buffer.window(1003, 4)), [3, 4]);
    assert.deepEqual(seqs(buffer.window(2000)), []);
  });

  test("get and after", () => {
    const buffer = new ReadingBuffer(100);
    buffer.merge([r(10), r(11), r(13)]);
    assert.deepEqual(buffer.get(11), r(11));
    assert.equal(buffer.get(12), null);
    assert.deepEqual(seqs(buffer.after(11)), [13]);
    assert.deepEqual(seqs(buffer.after(-Infinity)), [10, 11, 13]);
  });

  test("conflicts spots a server that started counting again", () => {
    const buffer = new ReadingBuffer(100);
    buffer.merge([r(10), r(11), r(12)]);
    assert.equal(buffer.conflicts(r(13)), false, "the next reading");
    assert.equal(buffer.conflicts(r(11)), false, "a duplicate");
    assert.equal(buffer.conflicts(r(11, 99, 5)), true, "same seq, other reading");
    assert.equal(buffer.conflicts(r(1)), true, "older than anything held");
    assert.equal(new ReadingBuffer(5).conflicts(r(1)), false);
  });

  test("rejects a capacity that is not a positive integer", () => {
    assert.throws(() => new ReadingBuffer(0), RangeError);
    assert.throws(() => new ReadingBuffer(2.5), RangeError);
  });
});

describe("segments", () => {
  test("splits at missing seqs so the line is broken there", () => {
    const runs = segments([r(1), r(2), r(4), r(5), r(6), r(9)]);
    assert.deepEqual(runs.map(seqs), [[1, 2], [4, 5, 6], [9]]);
  });

  test("also splits where the server was silent for longer than maxStep", () => {
    const readings = [r(1, 0, 10), r(2, 0, 11), r(3, 0, 20), r(4, 0, 21)];
    assert.deepEqual(segments(readings, 5).map(seqs), [[1, 2], [3, 4]]);
    assert.deepEqual(segments(readings).map(seqs), [[1, 2, 3, 4]]);
    assert.deepEqual(findGaps(readings), [], "a silent server is not a gap");
  });

  test("empty input has no segments", () => {
    assert.deepEqual(segments([]), []);
    assert.deepEqual(findGaps([]), []);
  });
});
