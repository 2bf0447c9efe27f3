// The page fetches all its modules at once: templates/index.html preloads every module
// dashboard.js imports, directly or not, and nothing else.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

const root = new URL("../../", import.meta.url);
const read = (path) => readFileSync(new URL(path, root), "utf8");

function imported(name, seen = new Set()) {
  for (const [, dep] of read(`static/js/${name}`).matchAll(/^\s*(?:import|export)\b[^;]*?from\s+"\.\/([\w-]+\.js)"/gm)) {
    if (!seen.has(dep)) {
      seen.add(dep);
      imported(dep, seen);
    }
  }
  return seen;
}

test("every module the dashboard imports is preloaded, and only those", () => {
  const template = read("templates/index.html");
  const preloaded = [...template.matchAll(/rel="modulepreload" href="\{\{ url_for\('static', filename='js\/([\w-]+\.js)'\) \}\}"/g)]
    .map((m) => m[1]);
  const modules = imported("dashboard.js");
  assert.ok(modules.has("sync.js") && modules.has("connection.js"), [...modules].join(", "));
  assert.deepEqual([...preloaded].sort(), [...modules].sort());
  assert.equal(new Set(preloaded).size, preloaded.length, "each once");
});
