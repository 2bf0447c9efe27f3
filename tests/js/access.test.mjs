import assert from "node:assert/strict";
import { test } from "node:test";

import { AGAIN_MS, toSignIn, unauthorized } from "../../static/js/access.js";

function memory() {
  const items = new Map();
  return { getItem: (k) => items.get(k) ?? null, setItem: (k, v) => items.set(k, String(v)) };
}

test("only the server's 'unauthorized' refusal means signed out", () => {
  assert.equal(unauthorized({ message: "unauthorized" }), true);
  assert.equal(unauthorized({ message: "too many wrong tokens from this address" }), false);
  assert.equal(unauthorized(null), false);
  assert.equal(unauthorized(undefined), false);
});

test("a refusal reloads to the sign-in form once a minute at most", () => {
  const storage = memory();
  let reloads = 0;
  const reload = () => { reloads += 1; };
  assert.equal(toSignIn({ storage, reload, now: 1_000_000 }), true);
  assert.equal(toSignIn({ storage, reload, now: 1_000_000 + AGAIN_MS - 1 }), false);
  assert.equal(reloads, 1);
  assert.equal(toSignIn({ storage, reload, now: 1_000_000 + AGAIN_MS }), true);
  assert.equal(reloads, 2);
});

test("without storage the page never reloads (no loop it could not see)", () => {
  const broken = { getItem: () => { throw new Error("denied"); }, setItem: () => {} };
  let reloads = 0;
  assert.equal(toSignIn({ storage: broken, reload: () => { reloads += 1; }, now: 5 }), false);
  assert.equal(reloads, 0);
});
