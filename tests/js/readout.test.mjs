// What the chart says in words: the view's name, a bucket view's caption, the readout of
// a bucket or a reading; and the labels of its time axis. On a UTC clock here.
process.env.TZ = "UTC";

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { timeTicks } from "../../static/js/chart.js";
import { formatClock, formatDate, formatDuration, sameDay } from "../../static/js/format.js";
import { bucketReadout, bucketTime, readingReadout, seriesCaption, viewLabel } from "../../static/js/readout.js";
import { fixedView, liveView } from "../../static/js/view.js";

const NOW = 1_717_452_000; // Mon 3 Jun 2024 22:00:00 UTC

test("durations", () => {
  assert.equal(formatDuration(45), "45 s");
  assert.equal(formatDuration(300), "5 min");
  assert.equal(formatDuration(330), "5 min 30 s");
  assert.equal(formatDuration(3600), "1 h");
  assert.equal(formatDuration(5400), "1 h 30 min");
  assert.equal(formatDuration(86400), "24 h");
  assert.equal(formatDuration(604800), "7 days");
  assert.equal(formatDuration(2 * 86400 + 3 * 3600), "2 days 3 h");
});

test("times on the clock", () => {
  assert.equal(formatDate(NOW), "Mon 3 Jun");
  assert.equal(formatClock(NOW), "22:00");
  assert.equal(formatClock(NOW + 13.25, { seconds: true, tenths: true }), "22:00:13.2");
  assert.equal(formatClock(NOW + 7, { date: true, seconds: true }), "Mon 3 Jun 22:00:07");
  assert.ok(sameDay(NOW, NOW + 7199));
  assert.ok(!sameDay(NOW, NOW + 7200));
});

describe("viewLabel", () => {
  test("live ranges and all", () => {
    assert.equal(viewLabel(liveView(300), null), "Last 5 min");
    assert.equal(viewLabel(liveView(604800), null), "Last 7 days");
    assert.equal(viewLabel(liveView(null), null), "All readings");
  });

  test("a fixed stretch: from and to, the date once when it is the same day", () => {
    const night = fixedView(NOW, NOW + 9 * 3600);
    assert.equal(viewLabel(night, night), "Mon 3 Jun 22:00 to Tue 4 Jun 07:00 (9 h)");
    const evening = fixedView(NOW - 3600, NOW);
    assert.equal(viewLabel(evening, evening), "Mon 3 Jun 21:00 to 22:00 (1 h)");
    const short = fixedView(NOW - 120, NOW);
    assert.equal(viewLabel(short, short), "Mon 3 Jun 21:58:00 to 22:00:00 (2 min)");
  });
});

describe("readouts", () => {
  test("a bucket: its time, how many readings, min, max, mean", () => {
    assert.equal(bucketReadout({ t: NOW, count: 1800, min: 0, max: 100, mean: 50.123 }, 1800),
      "Mon 3 Jun 22:00–22:30: 1,800 readings, min 0, max 100, mean 50.12");
    assert.equal(bucketReadout({ t: NOW, count: 1, min: 2.5, max: 2.5, mean: 2.5 }, 10),
      "Mon 3 Jun 22:00:00–22:00:10: 1 reading, min 2.5, max 2.5, mean 2.50");
  });

  test("bucket times across midnight, and whole days", () => {
    assert.equal(bucketTime(NOW + 1800, 3600), "Mon 3 Jun 22:30–23:30");
    assert.equal(bucketTime(NOW + 3600, 3600), "Mon 3 Jun 23:00–00:00");
    assert.equal(bucketTime(NOW + 7200, 3600), "Tue 4 Jun 00:00–01:00");
    assert.equal(bucketTime(NOW + 7200, 86400), "Tue 4 Jun");
    assert.equal(bucketTime(NOW + 7200, 7 * 86400), "Tue 4 Jun – Mon 10 Jun");
  });

  test("a reading: its time, value and seq", () => {
    assert.equal(readingReadout({ seq: 12, value: 42, ts: NOW + 5.5 }), "Mon 3 Jun 22:00:05.5: value 42 (seq 12)");
    assert.equal(readingReadout({ seq: 13, value: 0.1234567, ts: NOW + 6 }), "Mon 3 Jun 22:00:06: value 0.123457 (seq 13)");
  });
});

describe("seriesCaption", () => {
  const bucket = (t, count, min, max, mean) => ({ t, count, min, max, mean });

  test("readings, buckets and their width, extremes and mean", () => {
    const buckets = [bucket(0, 1800, 0, 100, 50), bucket(1800, 1800, 1, 99, 52)];
    assert.equal(seriesCaption("Last 7 days", buckets, 1800),
      "Last 7 days: 3,600 readings in 2 buckets of 30 min, lowest 0, highest 100, mean 51.00");
  });

  test("gaps: how many and how long in all", () => {
    const buckets = [bucket(0, 1, 5, 5, 5), bucket(120, 1, 5, 5, 5), bucket(180, 1, 5, 5, 5), bucket(600, 1, 5, 5, 5)];
    assert.equal(seriesCaption("Last 1 h", buckets, 60),
      "Last 1 h: 4 readings in 4 buckets of 1 min, lowest 5, highest 5, mean 5.00; 2 gaps with no readings (7 min in all, shaded)");
  });

  test("nothing yet", () => {
    assert.equal(seriesCaption("All readings", [], 60), "All readings: 0 readings");
  });
});

describe("timeTicks", () => {
  test("a day at 800 px: round hours, midnight as its date", () => {
    const ticks = timeTicks(NOW - 86400, NOW, 800);
    assert.deepEqual(ticks.map((t) => t.label),
      ["Mon 3 Jun", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00"]);
    assert.ok(ticks.every((t) => t.ts >= NOW - 86400 && t.ts <= NOW));
  });

  test("a week: days", () => {
    const ticks = timeTicks(NOW - 604800, NOW, 800);
    assert.deepEqual(ticks.map((t) => t.label), ["Tue 28 May", "Wed 29 May", "Thu 30 May", "Fri 31 May", "Sat 1 Jun",
      "Sun 2 Jun", "Mon 3 Jun"]);
  });

  test("a few minutes: minutes; a few seconds: seconds", () => {
    assert.deepEqual(timeTicks(NOW - 300, NOW, 500).map((t) => t.label), ["21:55", "21:56", "21:57", "21:58", "21:59", "22:00"]);
    assert.deepEqual(timeTicks(NOW, NOW + 20, 400).map((t) => t.label), ["22:00:00", "22:00:05", "22:00:10", "22:00:15", "22:00:20"]);
  });

  test("labels at least 100 px apart", () => {
    for (const span of [60, 3600, 21600, 86400, 604800, 365 * 86400]) {
      const ticks = timeTicks(NOW - span, NOW, 700);
      for (let i = 1; i < ticks.length; i += 1) {
        assert.ok(((ticks[i].ts - ticks[i - 1].ts) / span) * 700 >= 99, `${span}: ${ticks[i - 1].label} ${ticks[i].label}`);
      }
      assert.ok(ticks.length >= 2, String(span));
    }
  });
});
