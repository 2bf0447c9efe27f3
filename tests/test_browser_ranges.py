"""The chart's long ranges in Chromium, against real servers with a long stored history.

Each server starts on a copy of one SQLite file holding eight days of readings (one every
10 s, none for 5.5 hours two days ago), made before the start as an older version of the
program left it: the server builds its rollups at start, then ticks every 0.2 s. The page
is read through its DOM: the chart's data-mode / data-view / data-drawn / data-loading /
data-step / data-count / data-newest-*, the readout's data-*, the caption, the URL.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from test_browser import Dashboard

from randstream.stats import Stats

pytestmark = [pytest.mark.browser, pytest.mark.page_only]

DAY = 86_400
SPACING = 10.0  # seconds between stored readings
OUTAGE = (2 * DAY, 2 * DAY - 5.5 * 3600)  # no readings from..to, in seconds before the end

RANGES = [("1h", "3600", "Last 1 h"), ("6h", "21600", "Last 6 h"), ("24h", "86400", "Last 24 h"),
          ("7d", "604800", "Last 7 days"), ("all", "all", "All readings")]

READ = """() => {
  const c = document.getElementById('line-chart').dataset;
  const r = document.getElementById('chart-readout');
  return {
    mode: c.mode, view: c.view, drawn: Number(c.drawn), loading: c.loading, step: Number(c.step),
    count: Number(c.count), newestT: Number(c.newestT), newestCount: Number(c.newestCount),
    lastSeq: Number(c.lastSeq), summary: document.getElementById('chart-summary').textContent,
    label: document.getElementById('line-chart').getAttribute('aria-label'),
    readout: r.textContent, kind: r.dataset.kind, t: Number(r.dataset.t), rcount: Number(r.dataset.count),
    rmin: Number(r.dataset.min), rmax: Number(r.dataset.max), rmean: Number(r.dataset.mean),
    search: location.search, announced: document.getElementById('announcer').textContent,
    checked: document.querySelector('input[name="window"]:checked')?.dataset.range ?? null,
    liveButton: !document.getElementById('live-button').hidden,
  };
}"""

LOADED = """(view) => {
  const c = document.getElementById('line-chart').dataset;
  return c.view === view && c.mode === 'buckets' && c.loading === 'false' && Number(c.drawn) > 0;
}"""


def long_history(path: Path, days: float = 8, end: float | None = None, seed: int = 20) -> int:
    """A database as an older version left it: a reading every SPACING s up to `end`."""
    end = time.time() if end is None else end
    rng = random.Random(seed)
    stats = Stats(0, 100)
    rows = []
    ts = end - days * DAY
    while ts < end:
        if not OUTAGE[1] < end - ts <= OUTAGE[0]:
            value = rng.randint(0, 100)
            rows.append((len(rows) + 1, value, ts))
            stats.add(value, len(rows))
        ts += SPACING
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE readings (seq INTEGER PRIMARY KEY, value INTEGER NOT NULL, ts REAL NOT NULL);"
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        )
        db.executemany("INSERT INTO readings VALUES (?, ?, ?)", rows)
        db.executemany("INSERT INTO meta VALUES (?, ?)",
                       [("last_seq", str(len(rows))), ("stats", json.dumps(stats.state()))])
    db.close()
    return len(rows)


@pytest.fixture(scope="session")
def history_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ranges") / "history.sqlite3"
    long_history(path)
    return path


@pytest.fixture
def history_server(server_factory, history_template, tmp_path):
    db = tmp_path / "stream.sqlite3"
    shutil.copy(history_template, db)
    return server_factory("--interval", "0.2", db=str(db))


@pytest.fixture
def dashboard(browser):
    """Open the page at a URL (only that one), on a UTC clock, noting its /api/series requests."""
    opened: list[Dashboard] = []

    def open_page(server, search: str = "", **options) -> Dashboard:
        board = Dashboard(browser, server, viewport={"width": 1280, "height": 800}, timezone_id="UTC", **options)
        opened.append(board)
        board.series = []
        board.page.on("request", lambda r: "/api/series" in r.url and board.series.append(r.url))
        if search is not None:
            board.page.goto(server.url + "/" + search)
        return board

    yield open_page
    for board in opened:
        board.context.close()


def read(board) -> dict:
    return board.page.evaluate(READ)


def choose(board, key: str, value: str) -> dict:
    board.page.click(f'label[for="window-{value}"]')
    board.wait_for(LOADED, key)
    return read(board)


def raw_readings(server, through_seq: int, count: int = 10_000) -> list[dict]:
    _, body = server.get(f"/api/history?after={max(0, through_seq - count)}&limit={count}")
    return [r for r in body["readings"] if r["seq"] <= through_seq]


@pytest.mark.parametrize("key, value, label", RANGES)
def test_each_long_range_draws_buckets_and_moves_live(history_server, dashboard, key, value, label):
    board = dashboard(history_server)
    state = choose(board, key, value)
    assert state["search"] == f"?range={key}"
    assert state["summary"].startswith(f"{label}: ") and " buckets of " in state["summary"], state
    assert state["label"].startswith(f"Line chart. {label}: ")
    # Fewer buckets than the plot has pixels, never one per reading.
    assert 0 < state["drawn"] <= 1000 and state["count"] > state["drawn"], state
    if key in ("7d", "all"):
        # The outage, to the bucket: 5 h or 5 h 30 min of empty buckets, shaded.
        assert "; 1 gap with no readings (5 h" in state["summary"], state
    # Live: the newest bucket takes each reading as it comes, without fetching the range again.
    board.wait_for("(s) => Number(document.getElementById('line-chart').dataset.lastSeq) >= s + 3",
                   state["lastSeq"])  # the snapshot is in, and what it may ask for asked
    state = read(board)
    asked = len(board.series)
    board.wait_for("(s) => Number(document.getElementById('line-chart').dataset.lastSeq) >= s + 5",
                   state["lastSeq"])
    later = read(board)
    assert later["count"] > state["count"], (state, later)
    assert later["newestT"] > state["newestT"] or later["newestCount"] > state["newestCount"]
    assert len(board.series) == asked, board.series[asked:]
    board.assert_clean()


@pytest.mark.parametrize("key, value", [("1h", "3600"), ("7d", "604800")])
def test_the_newest_bucket_counts_exactly_the_readings_held(history_server, dashboard, key, value):
    """The answer plus the readings that came since are every reading once: none twice."""
    board = dashboard(history_server, f"?range={key}")
    board.wait_for(LOADED, key)
    board.wait_for("(s) => Number(document.getElementById('line-chart').dataset.lastSeq) >= s",
                   read(board)["lastSeq"] + 10)
    board.page.click("#pause-button")
    board.wait_for("() => !document.getElementById('pause-note').hidden")
    time.sleep(0.3)
    frozen = read(board)
    paused_seq = int(board.page.evaluate("() => document.getElementById('current-value').dataset.seq"))
    t, step = frozen["newestT"], frozen["step"]
    inside = [r for r in raw_readings(history_server, paused_seq) if t <= r["ts"] < t + step]
    assert inside and inside[-1]["seq"] == paused_seq
    assert frozen["newestCount"] == len(inside), (frozen, len(inside))
    board.assert_clean()


def test_switching_ranges_never_shows_a_blank_chart(history_server, dashboard):
    board = dashboard(history_server)
    choose(board, "1h", "3600")
    board.page.evaluate("""() => {
      window.drawnPerFrame = [];
      const sample = () => {
        window.drawnPerFrame.push(Number(document.getElementById('line-chart').dataset.drawn));
        requestAnimationFrame(sample);
      };
      requestAnimationFrame(sample);
    }""")
    # The server holds still (SIGSTOP) while the range changes: the page draws what it holds.
    for key, value in [("7d", "604800"), ("5m", "300"), ("24h", "86400"), ("all", "all")]:
        history_server.proc.send_signal(signal.SIGSTOP)
        try:
            board.page.click(f'label[for="window-{value}"]')
            board.wait_for("(k) => document.getElementById('line-chart').dataset.view === k", key)
            board.page.wait_for_timeout(200)
            held = read(board)
        finally:
            history_server.proc.send_signal(signal.SIGCONT)
        assert held["drawn"] > 0, held
        if key != "5m":
            assert held["loading"] == "true" and held["summary"].endswith("loading….")
            board.wait_for(LOADED, key)
        else:
            assert held["mode"] == "readings", "the short ranges draw every reading, held by the page"
    frames = board.page.evaluate("() => window.drawnPerFrame")
    assert len(frames) > 10 and min(frames) > 0, frames
    board.assert_clean()


def test_pointer_and_keys_read_out_a_bucket(history_server, dashboard):
    board = dashboard(history_server, "?range=7d")
    board.wait_for(LOADED, "7d")
    box = board.page.locator("#line-chart").bounding_box()
    board.page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
    board.wait_for("() => document.getElementById('chart-readout').dataset.kind === 'bucket'")
    state = read(board)
    assert state["step"] == 1800
    _, answer = history_server.get(f"/api/series?from={state['t']:.0f}&to={state['t'] + 1800:.0f}&points=1")
    [bucket] = answer["buckets"]
    assert (state["rcount"], state["rmin"], state["rmax"]) == (bucket["count"], bucket["min"], bucket["max"])
    assert abs(state["rmean"] - bucket["mean"]) < 1e-9
    assert state["readout"].endswith(
        f": {bucket['count']} readings, min {bucket['min']}, max {bucket['max']}, mean {bucket['mean']:.2f}")

    # Over the outage: no bucket there.
    gap_middle = time.time() - (OUTAGE[0] + OUTAGE[1]) / 2
    x = board.page.evaluate("""(ts) => {
      const c = document.getElementById('line-chart');
      const w = c.clientWidth - 52, to = Date.now() / 1000, from = to - 604800;
      return 40 + (ts - from) / (to - from) * w;
    }""", gap_middle)
    board.page.mouse.move(box["x"] + x, box["y"] + box["height"] / 2)
    board.wait_for("() => document.getElementById('chart-readout').textContent.endsWith('no readings here')")
    board.page.mouse.move(0, 0)

    # The keyboard: focus marks the newest bucket; arrows move a bucket at a time.
    board.page.focus("#line-chart")
    board.wait_for("() => document.getElementById('chart-readout').dataset.kind === 'bucket'")
    newest = read(board)
    assert newest["t"] == newest["newestT"]
    board.page.keyboard.press("ArrowLeft")
    board.page.keyboard.press("ArrowLeft")
    board.wait_for("(t) => Number(document.getElementById('chart-readout').dataset.t) === t",
                   newest["t"] - 2 * 1800)
    moved = read(board)
    assert moved["announced"] == moved["readout"], "the screen reader hears each move"
    board.page.keyboard.press("Home")
    board.wait_for("(t) => Number(document.getElementById('chart-readout').dataset.t) < t",
                   newest["t"] - 6 * DAY)
    board.assert_clean()


def test_zoom_by_drag_and_keys_with_the_view_in_the_url(history_server, dashboard):
    board = dashboard(history_server, "?range=7d")
    board.wait_for(LOADED, "7d")
    box = board.page.locator("#line-chart").bounding_box()
    y = box["y"] + box["height"] / 2
    # Drag across the middle fifth of the plot: that stretch, fixed, in the URL.
    left, width = box["x"] + 40, box["width"] - 52
    board.page.mouse.move(left + width * 0.4, y)
    board.page.mouse.down()
    board.page.mouse.move(left + width * 0.5, y, steps=5)
    assert board.page.is_visible("#chart-selection")
    board.page.mouse.move(left + width * 0.6, y, steps=5)
    board.page.mouse.up()
    board.wait_for("() => location.search.startsWith('?from=')"
                   " && document.getElementById('line-chart').dataset.view.includes('-')")
    zoomed = read(board)
    board.wait_for(LOADED, zoomed["view"])
    zoomed = read(board)
    frm, to = (int(v) for v in zoomed["view"].split("-"))
    assert abs((to - frm) - 0.2 * 7 * DAY) < 0.01 * 7 * DAY, zoomed
    assert zoomed["checked"] is None and zoomed["liveButton"]
    assert zoomed["step"] < 1800, "a narrower stretch: finer buckets"
    assert re.match(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d+ \w+ \d\d:\d\d to ", zoomed["summary"]), zoomed

    # Keys: + halves the span around the marked bucket, - doubles it, shift+arrow pans.
    board.page.focus("#line-chart")
    board.page.keyboard.press("+")
    changed = "(v) => document.getElementById('line-chart').dataset.view !== v"
    board.wait_for(changed, zoomed["view"])
    halved = read(board)
    f2, t2 = (int(v) for v in halved["view"].split("-"))
    assert abs((t2 - f2) - (to - frm) / 2) <= 2
    board.page.keyboard.press("-")
    board.wait_for(changed, halved["view"])
    f3, t3 = (int(v) for v in read(board)["view"].split("-"))
    assert abs((t3 - f3) - (to - frm)) <= 4
    board.page.keyboard.press("Shift+ArrowLeft")
    board.wait_for("(f) => Number(document.getElementById('line-chart').dataset.view.split('-')[0]) < f", f3)
    f4, t4 = (int(v) for v in read(board)["view"].split("-"))
    assert abs((f3 - f4) - (t3 - f3) / 4) <= 2 and t4 - f4 == t3 - f3

    # Back and forward walk the views; Escape goes back to live.
    panned = read(board)["search"]
    board.page.go_back()
    board.wait_for("(v) => document.getElementById('line-chart').dataset.view === v", f"{f3}-{t3}")
    board.page.go_forward()
    board.wait_for("(s) => location.search === s", panned)
    board.wait_for("(v) => document.getElementById('line-chart').dataset.view === v", f"{f4}-{t4}")
    board.page.focus("#line-chart")
    board.page.keyboard.press("Escape")
    board.wait_for(LOADED, "7d")
    state = read(board)
    assert state["search"] == "?range=7d" and state["checked"] == "7d" and not state["liveButton"]
    board.assert_clean()


def test_a_link_opens_the_same_view(history_server, dashboard):
    end = time.time()
    night_from = int(end - OUTAGE[0] - 3 * 3600)
    night_to = int(end - OUTAGE[1] + 3 * 3600)
    board = dashboard(history_server, f"?from={night_from}&to={night_to}")
    view = f"{night_from}-{night_to}"
    board.wait_for(LOADED, view)
    state = read(board)
    assert state["search"].startswith("?from=") and "T" in state["search"], "readable times in the URL"
    assert state["summary"].split(": ")[0].endswith(" (11 h 30 min)"), state
    assert "; 1 gap with no readings (5 h " in state["summary"], state

    # That URL, in another tab: the same view.
    other = dashboard(history_server, state["search"])
    other.wait_for(LOADED, view)
    assert read(other)["summary"] == state["summary"]

    # A range link: that range chosen.
    other.page.goto(history_server.url + "/?range=24h")
    other.wait_for(LOADED, "24h")
    assert read(other)["checked"] == "24h"
    board.assert_clean()
    other.assert_clean()


def test_opening_on_a_long_range_draws_it_once_without_starting_over(history_server, dashboard):
    """Fails before the fix in sync.js: the snapshot after the reading rendered into the page
    holds older readings, which counted as another stream's; the page started over (dropped
    what it held, asked for the statistics again) and the chart went blank for a moment."""
    board = dashboard(history_server, None)
    stats = []
    board.page.on("request", lambda r: r.url.endswith("/api/stats") and stats.append(r.url))
    board.page.add_init_script("""
      window.drawnPerFrame = [];
      const sample = () => {
        const c = document.getElementById('line-chart');
        if (c && c.dataset.mode === 'buckets') window.drawnPerFrame.push(Number(c.dataset.drawn));
        requestAnimationFrame(sample);
      };
      requestAnimationFrame(sample);
    """)
    board.page.goto(history_server.url + "/?range=7d")
    board.wait_for(LOADED, "7d")
    # Long enough for the statistics' retry (2 s) had the page started over during its fetch.
    board.wait_for("(s) => Number(document.getElementById('line-chart').dataset.lastSeq) >= s + 15",
                   read(board)["lastSeq"])
    frames = board.page.evaluate("() => window.drawnPerFrame")
    first = next(i for i, n in enumerate(frames) if n > 0)
    assert min(frames[first:]) > 0, frames
    assert len(stats) == 1, stats
    board.assert_clean()
