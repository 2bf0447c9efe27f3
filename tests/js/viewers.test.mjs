import assert from "node:assert/strict";
import { test } from "node:test";

import { ViewerCount, viewerCount, viewersLabel, viewersText } from "../../static/js/viewers.js";

function nodes() {
  return { box: { hidden: false, dataset: {} }, text: { textContent: "?" }, label: { textContent: "?" } };
}

test("the words", () => {
  assert.equal(viewersText(1), "1 watching");
  assert.equal(viewersText(12), "12 watching");
  assert.equal(viewersText(12345), "12,345 watching");
  assert.equal(viewersLabel(0), "0 people watching this stream");
  assert.equal(viewersLabel(1), "1 person watching this stream");
  assert.equal(viewersLabel(2), "2 people watching this stream");
  assert.equal(viewersLabel(12345), "12,345 people watching this stream");
});

test("only a whole count >= 0 is a count", () => {
  assert.equal(viewerCount({ count: 0 }), 0);
  assert.equal(viewerCount({ count: 7 }), 7);
  for (const bad of [null, undefined, 7, "7", [], {}, { count: "7" }, { count: -1 }, { count: 1.5 },
    { count: NaN }, { count: Infinity }, { count: 2 ** 60 }, { count: null }]) {
    assert.equal(viewerCount(bad), null, JSON.stringify(bad));
  }
});

test("hidden and blank until the first count", () => {
  const n = nodes();
  const viewers = new ViewerCount(n);
  assert.equal(n.box.hidden, true);
  assert.equal(n.text.textContent, "");
  assert.equal(n.label.textContent, "");
  assert.equal(viewers.count, null);
  viewers.show({ count: "many" });
  assert.equal(n.box.hidden, true, "a malformed payload shows nothing");
  viewers.show({ count: 1 });
  assert.deepEqual([n.box.hidden, n.text.textContent, n.label.textContent, n.box.dataset.count],
    [false, "1 watching", "1 person watching this stream", "1"]);
});

test("each count replaces the last; a malformed one keeps it", () => {
  const n = nodes();
  const viewers = new ViewerCount(n);
  viewers.show({ count: 1 });
  viewers.show({ count: 12 });
  assert.equal(n.text.textContent, "12 watching");
  assert.equal(n.label.textContent, "12 people watching this stream");
  viewers.show({ count: -3 });
  viewers.show(undefined);
  assert.equal(n.text.textContent, "12 watching");
  assert.equal(viewers.count, 12);
});

test("blank while disconnected, right again with the next connection's count", () => {
  const n = nodes();
  const viewers = new ViewerCount(n);
  viewers.show({ count: 12 });
  viewers.clear();
  assert.deepEqual([n.box.hidden, n.text.textContent, n.label.textContent, viewers.count], [true, "", "", null]);
  viewers.show({ count: 12 }); // the same number as before the drop is shown again
  assert.deepEqual([n.box.hidden, n.text.textContent], [false, "12 watching"]);
});
