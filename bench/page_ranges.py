"""Switching the dashboard's chart to 7 days: milliseconds from the click to the envelope.

    .venv/bin/python bench/page_ranges.py [--switches 20] [--db PATH]

Starts random_stream.py (``--interval 1``) on a free 127.0.0.1 port with a database of a
7-day history, a reading a second (604,800 readings; made here in a few seconds as an
older version of the program left it, so the server builds its rollups at start; or
``--db`` a database of your own, copied first). Then, ``--switches`` times, opens the
dashboard in headless Chromium (/usr/bin/chromium, Playwright) on ``?range=1h``, waits
until that is drawn, clicks "7 d" and prints, from the click (the radio's ``change``):

- first frame: the first frame drawn in the 7-day axes (what the page holds, while the
  server's answer is on its way: the chart is never blank);
- envelope: the frame with the server's 7-day buckets drawn (the page's data-loading false);
- the /api/series answers that took (requests, and bytes on the wire, gzip).

Each switch is a new page (nothing cached); the numbers include the round trips to the
server on this machine, the server's answer and the drawing.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import harness  # noqa: E402

from randstream.stats import Stats  # noqa: E402

WEEK = 7 * 86_400

# Runs before the page's scripts: the times, from the radio's change, of the first frame in
# the new view and of the frame with the server's buckets (both set by the page's render).
WATCH = """
window.__switch = null;
addEventListener('change', (e) => {
  if (e.target.name === 'window') window.__switch = { at: performance.now(), first: null, exact: null };
}, true);
new MutationObserver(() => {
  const s = window.__switch, c = document.getElementById('line-chart')?.dataset;
  if (!s || !c || c.view !== '7d') return;
  const now = performance.now();
  if (s.first === null && Number(c.drawn) > 0) s.first = now - s.at;
  if (s.exact === null && c.loading === 'false' && c.mode === 'buckets') s.exact = now - s.at;
}).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-loading', 'data-view', 'data-drawn'] });
"""


def week_of_readings(path: Path, interval: float = 1.0, seed: int = 7) -> int:
    """A version-0 database (as before rollups): a reading every `interval` s for 7 days."""
    rng = random.Random(seed)
    end = time.time()
    count = int(WEEK / interval)
    stats = Stats(0, 100)
    values = [rng.randint(0, 100) for _ in range(count)]
    for seq, value in enumerate(values, start=1):
        stats.add(value, seq)
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE readings (seq INTEGER PRIMARY KEY, value INTEGER NOT NULL, ts REAL NOT NULL);"
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        )
        db.executemany("INSERT INTO readings VALUES (?, ?, ?)",
                       ((seq, v, end - WEEK + seq * interval) for seq, v in enumerate(values, start=1)))
        db.executemany("INSERT INTO meta VALUES (?, ?)",
                       [("last_seq", str(count)), ("stats", json.dumps(stats.state()))])
    db.close()
    return count


def summary(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
    return f"median {statistics.median(values):6.1f}   p90 {p90:6.1f}   max {values[-1]:6.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--switches", type=int, default=20)
    p.add_argument("--db", type=Path, help="a database to copy instead of making one")
    args = p.parse_args()

    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="page-ranges-"))
    db = tmp / "week.sqlite3"
    started = time.perf_counter()
    if args.db:
        shutil.copy(args.db, db)
        print(f"database: a copy of {args.db}")
    else:
        count = week_of_readings(db)
        print(f"database: {count:,} readings over 7 days, made in {time.perf_counter() - started:.1f} s")
    port = harness.free_port()
    server = harness.ServerProcess(
        "server",
        [harness.PYTHON, str(harness.ROOT / "random_stream.py"), "--host", "127.0.0.1", "--port", str(port),
         "--db", str(db), "--interval", "1"],
        port, None, tmp / "server.log",
    )
    first, exact, sizes, requests = [], [], [], []
    try:
        server.wait_ready(timeout=120)
        url = f"http://127.0.0.1:{port}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            )
            for _ in range(args.switches):
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.add_init_script(WATCH)
                page.goto(url + "/?range=1h", wait_until="load")
                page.wait_for_function("""() => { const c = document.getElementById('line-chart').dataset;
                    return c.view === '1h' && c.loading === 'false' && Number(c.drawn) > 0; }""")
                page.wait_for_timeout(1500)  # the snapshot and its backfill are in
                answers = []
                page.on("requestfinished", lambda r, answers=answers: "/api/series" in r.url and answers.append(r))
                page.click('label[for="window-604800"]')
                page.wait_for_function("() => window.__switch && window.__switch.exact !== null", timeout=10_000)
                times = page.evaluate("() => window.__switch")
                first.append(times["first"])
                exact.append(times["exact"])
                page.wait_for_timeout(200)
                requests.append(len(answers))
                sizes.append(sum(r.sizes()["responseBodySize"] for r in answers))
                context.close()
            browser.close()
    finally:
        harness.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"switches from 1 h to 7 d: {args.switches}, each on a new page")
    print(f"  first frame in the 7-day axes, ms:   {summary(first)}")
    print(f"  the server's 7-day envelope, ms:     {summary(exact)}")
    print(f"  /api/series requests per switch: {statistics.median(requests):.0f}; "
          f"bytes on the wire (gzip): median {statistics.median(sizes):,.0f}")


if __name__ == "__main__":
    main()
