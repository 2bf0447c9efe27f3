// What stretch of time the chart shows: the ranges, live and fixed views, zoom and pan,
// and the view in the URL.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  MIN_SPAN, PRESETS, boundsOf, drawsReadings, fixedView, isoTime, liveView, pan, parseSpan, parseView,
  sameView, select, spanKey, withView, zoom,
} from "../../static/js/view.js";

const NOW = 1_717_452_000; // 2024-06-03T22:00:00Z
const fallback = liveView(300);

describe("the ranges on offer", () => {
  test("1, 5 and 15 min, 1 h, 6 h, 24 h, 7 d and all, each with a key that reads back", () => {
    assert.deepEqual(PRESETS.map((p) => p.key), ["1m", "5m", "15m", "1h", "6h", "24h", "7d", "all"]);
    for (const preset of PRESETS) {
      assert.equal(spanKey(preset.span), preset.key);
      assert.equal(parseSpan(preset.key), preset.span);
    }
  });

  test("other spans read as people write them; nonsense is none", () => {
    assert.equal(spanKey(5400), "90m");
    assert.equal(spanKey(45), "45s");
    assert.equal(spanKey(3 * 86400), "3d");
    assert.equal(parseSpan("90m"), 5400);
    assert.equal(parseSpan("2d"), 172800);
    for (const bad of ["", "7", "7w", "-1h", "1.5h", "0s", "5s", "99999999d", null, undefined]) {
      assert.equal(parseSpan(bad), undefined, String(bad));
    }
  });
});

describe("the view in the URL", () => {
  test("a live range: ?range=7d, and back", () => {
    const search = withView("", liveView(604800));
    assert.equal(search, "?range=7d");
    assert.deepEqual(parseView(search, fallback), liveView(604800));
    assert.deepEqual(parseView("?range=all", fallback), liveView(null));
  });

  test("a fixed stretch: readable UTC times, and back", () => {
    const view = fixedView(NOW - 9 * 3600, NOW);
    const search = withView("", view);
    assert.equal(search, "?from=2024-06-03T13:00:00Z&to=2024-06-03T22:00:00Z");
    assert.deepEqual(parseView(search, fallback), view);
  });

  test("epoch seconds are read too", () => {
    assert.deepEqual(parseView(`?from=${NOW - 600}&to=${NOW}`, fallback), fixedView(NOW - 600, NOW));
  });

  test("the other parameters stay; the old view's go", () => {
    assert.equal(withView("?token=abc&range=1h", fixedView(NOW - 60, NOW)),
      "?token=abc&from=2024-06-03T21:59:00Z&to=2024-06-03T22:00:00Z");
    assert.equal(withView("?from=1&to=2&x=1", liveView(3600)), "?x=1&range=1h");
  });

  test("nonsense falls back", () => {
    for (const search of ["", "?range=forever", `?from=${NOW}`, `?from=${NOW}&to=${NOW - 60}`, "?from=yesterday&to=now",
      `?from=${NOW}&to=${NOW}`]) {
      assert.deepEqual(parseView(search, fallback), fallback, search);
    }
  });

  test("isoTime drops the milliseconds", () => {
    assert.equal(isoTime(NOW + 0.4), "2024-06-03T22:00:00Z");
  });
});

describe("bounds", () => {
  test("a live view ends now; all begins at the first reading once known", () => {
    assert.deepEqual(boundsOf(liveView(3600), NOW), { from: NOW - 3600, to: NOW, live: true });
    assert.deepEqual(boundsOf(liveView(null), NOW, NOW - 86400 * 30), { from: NOW - 86400 * 30, to: NOW, live: true });
    assert.deepEqual(boundsOf(liveView(null), NOW, null), { from: NOW - 604800, to: NOW, live: true });
    assert.deepEqual(boundsOf(fixedView(NOW - 100, NOW - 50), NOW), { from: NOW - 100, to: NOW - 50, live: false });
  });

  test("a fixed view is whole seconds and at least MIN_SPAN wide", () => {
    assert.deepEqual(fixedView(10.4, 30.6), { live: false, from: 10, to: 31 });
    const narrow = fixedView(100, 101);
    assert.equal(narrow.to - narrow.from, MIN_SPAN);
    assert.deepEqual(fixedView(30, 10), { live: false, from: 10, to: 30 });
  });

  test("readings up to 15 min the page holds; buckets beyond", () => {
    assert.equal(drawsReadings(boundsOf(liveView(900), NOW), NOW - 60), true);
    assert.equal(drawsReadings(boundsOf(liveView(3600), NOW), NOW - 6000), false);
    assert.equal(drawsReadings({ from: NOW - 600, to: NOW - 300, live: false }, NOW - 900), true);
    assert.equal(drawsReadings({ from: NOW - 600, to: NOW - 300, live: false }, NOW - 400), false, "older than held");
    assert.equal(drawsReadings({ from: NOW - 600, to: NOW - 300, live: false }, null), false);
  });

  test("sameView", () => {
    assert.ok(sameView(liveView(60), liveView(60)));
    assert.ok(!sameView(liveView(60), liveView(null)));
    assert.ok(sameView(fixedView(1, 100), fixedView(1, 100)));
    assert.ok(!sameView(fixedView(1, 100), liveView(99)));
  });
});

describe("zoom and pan", () => {
  const live = liveView(86400);
  const bounds = boundsOf(live, NOW);

  test("zooming in keeps the moment under the pointer where it is, and is fixed", () => {
    const at = NOW - 21600; // three quarters along
    const view = zoom(live, bounds, 0.5, at, NOW);
    assert.equal(view.live, false);
    assert.equal(view.to - view.from, 43200);
    assert.equal((at - view.from) / (view.to - view.from), 0.75);
  });

  test("zooming in stops at MIN_SPAN", () => {
    let view = live;
    for (let i = 0; i < 40; i += 1) {
      view = zoom(view, boundsOf(view, NOW), 0.5, NOW - 1000, NOW);
    }
    assert.equal(view.to - view.from, MIN_SPAN);
  });

  test("zooming out of a live range: the next wider range, still live", () => {
    assert.deepEqual(zoom(liveView(3600), boundsOf(liveView(3600), NOW), 2, NOW, NOW), liveView(21600));
    assert.deepEqual(zoom(liveView(604800), boundsOf(liveView(604800), NOW), 2, NOW, NOW), liveView(null));
    assert.deepEqual(zoom(liveView(null), boundsOf(liveView(null), NOW), 2, NOW, NOW), liveView(null));
    assert.deepEqual(zoom(liveView(5400), boundsOf(liveView(5400), NOW), 2, NOW, NOW), liveView(21600));
  });

  test("zooming out of a fixed view doubles it, never past now", () => {
    const view = fixedView(NOW - 7200, NOW - 3600);
    assert.deepEqual(zoom(view, boundsOf(view, NOW), 2, NOW - 5400, NOW), fixedView(NOW - 9000, NOW - 1800));
    assert.deepEqual(zoom(view, boundsOf(view, NOW), 8, NOW - 5400, NOW), fixedView(NOW - 28800, NOW));
  });

  test("panning back makes a fixed view; forward to now, live again", () => {
    const back = pan(live, bounds, -0.25, NOW);
    assert.deepEqual(back, fixedView(NOW - 86400 - 21600, NOW - 21600));
    assert.deepEqual(pan(back, boundsOf(back, NOW), 0.25, NOW), liveView(86400));
    assert.deepEqual(pan(live, bounds, 0.25, NOW), live);
    const older = fixedView(NOW - 20000, NOW - 10000);
    assert.deepEqual(pan(older, boundsOf(older, NOW), 0.25, NOW), fixedView(NOW - 17500, NOW - 7500));
  });

  test("a drag selects the stretch between its ends, either way", () => {
    assert.deepEqual(select(NOW - 100, NOW - 4000, NOW), fixedView(NOW - 4000, NOW - 100));
    assert.deepEqual(select(NOW - 100, NOW + 50, NOW), fixedView(NOW - 150, NOW), "not past now");
  });
});
