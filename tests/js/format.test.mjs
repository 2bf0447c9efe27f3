import assert from "node:assert/strict";
import { test } from "node:test";

import { formatAgo, formatCount, formatFixed, formatInterval, formatPValue } from "../../static/js/format.js";

test("formatAgo", () => {
  assert.equal(formatAgo(0.4), "0 s ago");
  assert.equal(formatAgo(59.9), "59 s ago");
  assert.equal(formatAgo(60), "1 min ago");
  assert.equal(formatAgo(200), "3 min 20 s ago");
  assert.equal(formatAgo(7500), "2 h 5 min ago");
  assert.equal(formatAgo(3 * 86400), "3 d ago");
  assert.equal(formatAgo(-3), "0 s ago");
});

test("numbers", () => {
  assert.equal(formatCount(1234567), "1,234,567");
  assert.equal(formatCount(null), "–");
  assert.equal(formatFixed(2.345678, 2), "2.35");
  assert.equal(formatFixed(null, 2), "–");
  assert.equal(formatPValue(0.0004), "< 0.001");
  assert.equal(formatPValue(0.5), "0.500");
  assert.equal(formatInterval(1), "1 s");
  assert.equal(formatInterval(0.2), "0.2 s");
  assert.equal(formatInterval(300), "5 min");
});
