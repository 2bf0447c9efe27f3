"""The dashboard in Debian's Chromium (Playwright) against real server processes.

The page is read only through its DOM: #current-value (text, data-seq),
#connection-status, the chart's data-first-seq / data-last-seq / data-held /
data-missing, and the statistics' data-value attributes.
"""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import time
from urllib.parse import urlsplit

import pytest
from conftest import fill_database, swap_database

from randstream.stats import chi_square_p_value

pytestmark = pytest.mark.browser
# page_only: what the page itself does with the readings (pause, keyboard, layout, gaps,
# statistics). The server's path cannot change it, so tests/run's --fast-path off and gevent
# passes leave these out; the rest (connect, reconnect, resume, pings, EventSource) they run.

# The `browser` fixture (Debian's Chromium through Playwright) is in conftest.py: one
# Playwright for every browser test module in the session.
WAIT = 30_000  # ms: generous, the tests never time the stream

# Everything the tests read from the page, in one synchronous look.
READ_STATE = """() => {
  const byId = (id) => document.getElementById(id);
  const chart = byId("line-chart").dataset;
  const stat = (name) => byId("stat-" + name).dataset.value;
  return {
    value: byId("current-value").textContent.trim(),
    seq: byId("current-value").dataset.seq,
    status: byId("connection-status").textContent.trim(),
    state: byId("connection-status").dataset.state,
    first: chart.firstSeq, last: chart.lastSeq, held: chart.held, missing: chart.missing,
    through: byId("stats").dataset.throughSeq,
    stats: {
      count: stat("count"), min: stat("min"), max: stat("max"), mean: stat("mean"),
      stddev: stat("stddev"), chi_square: stat("chi-square"), p_value: stat("p-value"),
    },
    summary: byId("chart-summary").textContent,
    pressed: byId("pause-button").getAttribute("aria-pressed"),
    pauseNote: byId("pause-note").hidden ? null : byId("pause-note").textContent,
  };
}"""


class Dashboard:
    """One page on one server, with everything it logged and requested."""

    def __init__(self, browser, server, **context_options):
        self.server = server
        self.origin = server.url
        self.context = browser.new_context(**context_options)
        self.console_errors: list[str] = []
        self.foreign: list[str] = []
        self.websockets: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT)
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append(f"uncaught: {e}"))
        self.page.on("websocket", lambda ws: self.websockets.append(ws.url))

    def _route(self, route):
        url = route.request.url
        if same_origin(url, self.origin):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def open(self) -> Dashboard:
        self.page.goto(self.origin + "/")
        return self

    def state(self) -> dict:
        return self.page.evaluate(READ_STATE)

    def wait_for(self, js_condition: str, arg=None, timeout: float = WAIT):
        self.page.wait_for_function(js_condition, arg=arg, timeout=timeout, polling=100)

    def wait_seq_at_least(self, seq: int):
        self.wait_for(
            "(s) => Number(document.getElementById('current-value').dataset.seq) >= s", seq
        )

    def assert_clean(self, allow=()):
        errors = [e for e in self.console_errors if not any(a in e for a in allow)]
        assert errors == [], errors
        assert self.foreign == [], self.foreign
        host = urlsplit(self.origin).netloc
        assert self.websockets, "the page never opened its WebSocket"
        for url in self.websockets:
            assert url == f"ws://{host}/socket.io/?EIO=4&transport=websocket", url


def same_origin(url: str, origin: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return f"{parts.scheme}://{parts.netloc}" == origin


@pytest.fixture
def dashboard(browser):
    opened: list[Dashboard] = []

    def open_page(server, **context_options) -> Dashboard:
        options = {"viewport": {"width": 1280, "height": 800}, **context_options}
        board = Dashboard(browser, server, **options)
        opened.append(board)
        return board.open()

    yield open_page
    for board in opened:
        board.context.close()


def wait_server_seq(server, seq: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = server.get("/api/latest")
        if status == 200 and body["seq"] >= seq:
            return body["seq"]
        time.sleep(0.05)
    raise AssertionError(f"server did not reach seq {seq}")


def held_without_holes(state: dict) -> bool:
    first, last, held = int(state["first"]), int(state["last"]), int(state["held"])
    return state["missing"] == "0" and held == last - first + 1


def test_history_at_once_then_a_new_number_every_interval(server_factory, dashboard):
    server = server_factory("--interval", "0.1")
    before = wait_server_seq(server, 15)
    board = dashboard(server)

    # The snapshot on connect fills the page before the next tick matters.
    board.wait_for("(n) => Number(document.getElementById('line-chart').dataset.held) >= n", before)
    state = board.state()
    assert int(state["first"]) == 1
    assert held_without_holes(state)
    assert state["status"] == "live" and state["state"] == "live"

    seen = {state["seq"]}
    for _ in range(4):
        board.wait_seq_at_least(int(state["seq"]) + 1)
        state = board.state()
        seen.add(state["seq"])
        value = int(state["value"])
        assert 0 <= value <= 100
        _, body = server.get(f"/api/history?after={int(state['seq']) - 1}&limit=1")
        assert body["readings"][0]["value"] == value, "the page shows the server's reading"
    assert len(seen) == 5
    assert "readings" in state["summary"]
    board.assert_clean()


@pytest.mark.page_only
def test_chart_and_statistics_agree_with_api_stats(server_factory, dashboard, tmp_path):
    server = server_factory(
        "--interval", "0.1", "--min", "1", "--max", "6", db=str(tmp_path / "s.db")
    )
    wait_server_seq(server, 10)
    board = dashboard(server)
    board.wait_for("() => document.getElementById('stats').dataset.throughSeq !== ''")
    chart_before = board.page.evaluate("() => document.getElementById('line-chart').toDataURL()")
    start = int(board.state()["through"])
    board.wait_for(
        "(s) => Number(document.getElementById('stats').dataset.throughSeq) >= s", start + 5
    )
    chart_after = board.page.evaluate("() => document.getElementById('line-chart').toDataURL()")
    assert chart_before != chart_after, "the chart is redrawn as readings come"

    # The page's numbers hold through seq P; the server's may be a little ahead.
    for _ in range(5):
        page = board.state()
        expected = stats_through(server, int(page["through"]))
        if expected is not None:
            break
    else:
        pytest.fail("could not line the server's stats up with the page's")
    shown = page["stats"]
    assert int(shown["count"]) == expected["count"] > 0
    assert int(shown["min"]) == expected["min"]
    assert int(shown["max"]) == expected["max"]
    for key in ("mean", "stddev", "chi_square", "p_value"):
        assert math.isclose(float(shown[key]), expected[key], rel_tol=1e-9, abs_tol=1e-12), key
    board.assert_clean()


def stats_through(server, seq: int) -> dict | None:
    """/api/stats as it was at `seq`: the newer readings taken out of its histogram."""
    _, now = server.get("/api/stats")
    through = now["since_seq"] + now["count"] - 1
    if through < seq:
        return None
    _, newer = server.get(f"/api/history?after={seq}&limit=1000")
    extra = [r for r in newer["readings"] if r["seq"] <= through]
    if len(extra) != through - seq:
        return None
    lo = now["range"]["min"]
    histogram = list(now["histogram"])
    for r in extra:
        histogram[r["value"] - lo] -= 1
    count = sum(histogram)
    values = [lo + i for i, n in enumerate(histogram) if n]
    mean = sum((lo + i) * n for i, n in enumerate(histogram)) / count
    variance = sum(n * (lo + i - mean) ** 2 for i, n in enumerate(histogram)) / count
    expect = count / len(histogram)
    chi = sum((n - expect) ** 2 for n in histogram) / expect
    if not extra:  # nothing to take out: the server's own numbers must match exactly
        mean, variance, chi = now["mean"], now["stddev"] ** 2, now["chi_square"]
    return {
        "count": count,
        "min": min(values),
        "max": max(values),
        "mean": mean,
        "stddev": math.sqrt(variance),
        "chi_square": chi,
        "p_value": chi_square_p_value(chi, len(histogram) - 1),
    }


def test_survives_server_restart_without_missing_readings(server_factory, dashboard, tmp_path):
    server = server_factory("--interval", "0.1", db=str(tmp_path / "stream.db"))
    wait_server_seq(server, 5)
    board = dashboard(server)
    board.wait_seq_at_least(8)
    seq_before_stop = int(board.state()["seq"])
    sent = []  # frames of the WebSockets the page opens from now on
    board.page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))

    assert server.stop() == 0
    board.wait_for(
        "() => document.getElementById('connection-status').textContent === 'reconnecting'"
    )
    state = board.state()
    assert state["state"] == "reconnecting"
    time.sleep(2)  # a few failed attempts: the backoff grows

    server.start()
    restarted_at = wait_server_seq(server, seq_before_stop + 10)
    board.wait_for("() => document.getElementById('connection-status').textContent === 'live'")
    board.wait_seq_at_least(restarted_at + 5)
    state = board.state()
    assert int(state["first"]) <= seq_before_stop < restarted_at < int(state["last"])
    assert held_without_holes(state), state
    # It said what it held, and of which stream, when it joined (no full snapshot, no
    # resume round trip).
    connects = [json.loads(f[2:]) for f in sent if isinstance(f, str) and f.startswith("40")]
    stream = server.get("/api/latest")[1]["stream"]["id"]
    assert connects and all(set(c) == {"after", "stream"} for c in connects), sent
    assert connects[-1]["after"] >= seq_before_stop and connects[-1]["stream"] == stream
    assert not any(f.startswith('42["resume"') for f in sent), sent
    # While the server was away the browser logs its failed connection attempts.
    board.assert_clean(
        allow=("ERR_CONNECTION_REFUSED", "WebSocket connection to", "Failed to load resource")
    )


def test_a_swapped_database_replaces_what_the_page_held(server_factory, dashboard, tmp_path):
    """Fails before: back on a database swapped for another stream whose seq had moved past
    the page's, the page kept its readings and merged the other stream's after them."""
    replacement = fill_database(tmp_path / "b.sqlite3", 300)
    with sqlite3.connect(replacement) as db:
        db.execute("DELETE FROM readings WHERE seq < 200")  # B: seqs 200..300
    server = server_factory("--interval", "0.1", db=str(tmp_path / "a.sqlite3"))
    board = dashboard(server)
    board.wait_seq_at_least(8)
    assert int(board.state()["first"]) < 200

    assert server.stop() == 0
    board.wait_for("() => document.getElementById('connection-status').textContent === 'reconnecting'")
    swap_database(replacement, server.db)
    server.start()
    board.wait_seq_at_least(305)
    state = board.state()
    assert int(state["first"]) == 200, state  # B's readings only: none of A's before them
    assert held_without_holes(state), state
    board.assert_clean(
        allow=("ERR_CONNECTION_REFUSED", "WebSocket connection to", "Failed to load resource")
    )


@pytest.mark.page_only
def test_pause_freezes_the_view_and_resume_catches_up(server_factory, dashboard):
    server = server_factory("--interval", "0.1")
    board = dashboard(server)
    board.wait_seq_at_least(3)

    board.page.click("#pause-button")
    board.wait_for("() => !document.getElementById('pause-note').hidden")  # drawn next frame
    frozen = board.state()
    assert frozen["pressed"] == "true"
    assert frozen["pauseNote"] and "Paused" in frozen["pauseNote"]
    wait_server_seq(server, int(frozen["seq"]) + 8)
    board.wait_for(
        "(s) => Number(document.getElementById('line-chart').dataset.lastSeq) >= s",
        int(frozen["seq"]) + 8,
    )
    still = board.state()
    assert (still["seq"], still["value"], still["through"]) == (
        frozen["seq"],
        frozen["value"],
        frozen["through"],
    )
    assert still["summary"] == frozen["summary"]

    # Resume with the keyboard.
    board.page.focus("#pause-button")
    board.page.keyboard.press("Enter")
    board.wait_seq_at_least(int(still["last"]))
    resumed = board.state()
    assert resumed["pressed"] == "false" and resumed["pauseNote"] is None
    assert held_without_holes(resumed)
    board.assert_clean()


@pytest.mark.page_only
def test_window_choice_works_from_the_keyboard(server_factory, dashboard):
    server = server_factory("--interval", "0.2")
    board = dashboard(server)
    board.wait_seq_at_least(2)
    assert board.page.is_checked("#window-300")
    board.page.focus("#window-300")
    board.page.keyboard.press("ArrowRight")
    assert board.page.is_checked("#window-900")
    board.wait_for(
        "() => document.getElementById('chart-summary').textContent.startsWith('Last 15 min')"
    )
    board.page.keyboard.press("ArrowLeft")
    board.page.keyboard.press("ArrowLeft")
    board.wait_for(
        "() => document.getElementById('chart-summary').textContent.startsWith('Last 1 min')"
    )
    board.assert_clean()


@pytest.mark.page_only
def test_dark_mode_reduced_motion_and_phone_width(server_factory, dashboard):
    server = server_factory("--interval", "0.2")
    board = dashboard(
        server,
        color_scheme="dark",
        reduced_motion="reduce",
        viewport={"width": 390, "height": 844},
        device_scale_factor=3,
    )
    board.wait_seq_at_least(2)
    looks = board.page.evaluate("""() => {
      const bg = getComputedStyle(document.documentElement).backgroundColor;
      const dot = getComputedStyle(document.querySelector('.status-dot')).animationName;
      const chart = document.getElementById('line-chart');
      return {bg, dot, scroll: document.documentElement.scrollWidth,
              canvas: chart.width, css: chart.clientWidth};
    }""")
    r, g, b = (int(c) for c in looks["bg"][looks["bg"].index("(") + 1 : -1].split(",")[:3])
    assert r + g + b < 120, f"dark background expected, got {looks['bg']}"
    assert looks["dot"] == "none", "no pulsing with prefers-reduced-motion"
    assert looks["scroll"] <= 390, "no sideways scrolling on a phone"
    assert looks["canvas"] == looks["css"] * 3, "the canvas is drawn at device pixels"
    board.assert_clean()


def random_number_seq(message) -> int | None:
    """The seq of a `random_number` frame from the server, else None."""
    if isinstance(message, str) and message.startswith('42["random_number"'):
        return json.loads(message[2:])[1]["seq"]
    return None


def drop_frames(board: Dashboard, drop) -> list[str]:
    """Pass the page's WebSocket through, leaving out server frames for which drop(frame) is true."""
    sent_by_page: list[str] = []

    def handler(ws):
        server = ws.connect_to_server()
        server.on_message(lambda message: None if drop(message) else ws.send(message))

        def to_server(message):
            sent_by_page.append(message)
            server.send(message)

        ws.on_message(to_server)

    board.page.route_web_socket("**/socket.io/**", handler)
    return sent_by_page


class DropLiveReadings:
    """Drops the 6th to 10th `random_number` frame the page would get; remembers their seqs."""

    def __init__(self):
        self.seen = 0
        self.lost: list[int] = []

    def __call__(self, message) -> bool:
        seq = random_number_seq(message)
        if seq is None:
            return False
        self.seen += 1
        if 6 <= self.seen <= 10:
            self.lost.append(seq)
            return True
        return False

    def wait_for_live(self, board: Dashboard) -> None:
        """Until a live reading has passed: the snapshot is in, so the readings a test waits
        for next are live ones. (The page shows the seq the server rendered into it at once;
        a connect slower than 15 intervals brought a snapshot that covered the whole wait.)"""
        deadline = time.monotonic() + WAIT / 1000
        while self.seen == 0:
            assert time.monotonic() < deadline, "no live reading reached the page"
            board.page.wait_for_timeout(50)  # Playwright delivers the frames meanwhile


def test_missed_events_are_fetched_with_resume(server_factory, browser):
    server = server_factory("--interval", "0.1")
    board = Dashboard(browser, server, viewport={"width": 1280, "height": 800})
    drop = DropLiveReadings()
    try:
        sent = drop_frames(board, drop)
        board.open()
        drop.wait_for_live(board)
        board.wait_for(
            "(s) => Number(document.getElementById('current-value').dataset.seq) >= s",
            int(board.state()["seq"]) + 15,
        )
        assert len(drop.lost) == 5
        board.wait_for("() => document.getElementById('line-chart').dataset.missing === '0'")
        assert held_without_holes(board.state())
        assert f'42["resume",{{"after":{drop.lost[0] - 1}}}]' in sent
        board.assert_clean()
    finally:
        board.context.close()


@pytest.mark.page_only
def test_readings_that_cannot_be_recovered_stay_a_gap(server_factory, browser):
    server = server_factory("--interval", "0.1")
    drop_live = DropLiveReadings()
    histories = []

    def drop(message):
        if isinstance(message, str) and message.startswith('42["history"'):
            histories.append(message)
            return len(histories) > 1  # the snapshot passes, resume replies do not
        return drop_live(message)

    board = Dashboard(browser, server, viewport={"width": 1280, "height": 800})
    try:
        drop_frames(board, drop)
        board.open()
        drop_live.wait_for_live(board)
        board.wait_for(
            "(s) => Number(document.getElementById('current-value').dataset.seq) >= s",
            int(board.state()["seq"]) + 15,
        )
        assert len(drop_live.lost) == 5
        state = board.state()
        assert state["missing"] == "5", state
        assert "1 gap (5 missing readings" in state["summary"]
        # The statistics come from the server, which did count the lost readings.
        board.wait_for(
            "(s) => Number(document.getElementById('stats').dataset.throughSeq) > s",
            drop_live.lost[-1],
        )
        board.assert_clean()
    finally:
        board.context.close()


# Lets a test hide and show the tab; headless Chromium always counts as visible.
FAKE_VISIBILITY = """(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, "hidden", { get: () => hidden, configurable: true });
  Object.defineProperty(Document.prototype, "visibilityState",
    { get: () => (hidden ? "hidden" : "visible"), configurable: true });
  window.setTabHiddenForTest = (value) => {
    hidden = value;
    document.dispatchEvent(new Event("visibilitychange"));
  };
})();"""


@pytest.mark.page_only
def test_hidden_tab_draws_nothing_and_catches_up(server_factory, browser):
    server = server_factory("--interval", "0.1")
    board = Dashboard(browser, server, viewport={"width": 1280, "height": 800})
    try:
        board.context.add_init_script(FAKE_VISIBILITY)
        board.open()
        board.wait_seq_at_least(3)
        board.page.evaluate("() => setTabHiddenForTest(true)")
        board.page.wait_for_timeout(300)  # a frame requested just before hiding may still run
        hidden = board.state()
        wait_server_seq(server, int(hidden["seq"]) + 10)
        board.page.wait_for_timeout(500)
        assert board.state()["seq"] == hidden["seq"], "nothing is drawn while hidden"
        board.page.evaluate("() => setTabHiddenForTest(false)")
        board.wait_seq_at_least(int(hidden["seq"]) + 10)
        assert held_without_holes(board.state())
        board.assert_clean()
    finally:
        board.context.close()


@pytest.mark.page_only
def test_live_regions_do_not_chatter(server_factory, dashboard):
    server = server_factory("--interval", "0.2")
    board = dashboard(server)
    board.wait_seq_at_least(2)
    board.page.evaluate("""() => {
      window.liveChanges = [];
      for (const node of document.querySelectorAll('[aria-live], [role="status"]')) {
        new MutationObserver(() => liveChanges.push(node.id || node.className))
          .observe(node, { childList: true, subtree: true, characterData: true });
      }
    }""")
    start = int(board.state()["seq"])
    board.wait_seq_at_least(start + 15)  # 15 new readings
    changes = board.page.evaluate("() => liveChanges")
    assert len(changes) <= 1, changes
    board.assert_clean()


def test_short_history_is_filled_back_to_the_widest_window(server_factory, dashboard):
    # The snapshot on connect holds 20 readings; the page fetches the older ones (60 readings
    # at 0.05 s come in 3 s).
    server = server_factory("--interval", "0.05", "--history", "20")
    before = wait_server_seq(server, 60)
    board = dashboard(server)
    board.wait_for("() => document.getElementById('line-chart').dataset.firstSeq === '1'")
    state = board.state()
    assert int(state["last"]) >= before
    assert held_without_holes(state)
    board.assert_clean()


def test_a_frozen_server_is_noticed_by_missing_pings(server_factory, dashboard):
    # SIGSTOP keeps the TCP connection open: only the ping timeout can tell.
    server = server_factory("--interval", "0.1", "--ping-interval", "1", "--ping-timeout", "1")
    board = dashboard(server)
    board.wait_seq_at_least(3)
    server.proc.send_signal(signal.SIGSTOP)
    try:
        board.wait_for(
            "() => document.getElementById('connection-status').textContent === 'reconnecting'"
        )
    finally:
        server.proc.send_signal(signal.SIGCONT)
    before = wait_server_seq(server, int(board.state()["seq"]) + 10)
    board.wait_for("() => document.getElementById('connection-status').textContent === 'live'")
    board.wait_seq_at_least(before)
    assert held_without_holes(board.state())
    board.assert_clean(allow=("WebSocket connection to",))


# Other sources and GET /api/stream -------------------------------------------------------

QUARTERS = '''
n = 0
def read():
    global n
    n += 1
    return n * 0.25 + 0.125  # never an integer: the page must show floats
'''

COLLECT_EVENTS = """([url, count]) => new Promise((resolve, reject) => {
  const source = new EventSource(url);
  const got = [];
  const timer = setTimeout(() => reject(new Error("timed out: " + JSON.stringify(got))), 20000);
  source.addEventListener("reading", (e) => {
    got.push({ id: e.lastEventId, data: JSON.parse(e.data) });
    if (got.length === count) {
      clearTimeout(timer);
      source.close();
      resolve(got);
    }
  });
})"""


def test_eventsource_in_chromium_reads_the_stream(server_factory, dashboard):
    server = server_factory("--interval", "0.1")
    board = dashboard(server)
    events = board.page.evaluate(COLLECT_EVENTS, ["/api/stream?after=0", 12])
    seqs = [e["data"]["seq"] for e in events]
    assert seqs == list(range(1, 13))
    _, latest = server.get("/api/latest")
    assert all(e["id"] == f'{latest["stream"]["id"]}:{e["data"]["seq"]}' for e in events)
    assert all(0 <= e["data"]["value"] <= 100 for e in events)
    board.assert_clean()


def test_eventsource_reconnects_with_last_event_id_and_loses_nothing(server_factory, dashboard, tmp_path):
    server = server_factory("--interval", "0.1", db=str(tmp_path / "stream.sqlite3"))
    board = dashboard(server)
    board.page.evaluate("""() => {
        window.got = [];
        window.drops = 0;
        const source = new EventSource("/api/stream");
        source.addEventListener("reading", (e) => window.got.push(JSON.parse(e.data).seq));
        source.addEventListener("error", () => { window.drops += 1; });
    }""")
    board.wait_for("() => window.got.length >= 5")
    assert server.stop() == 0  # ends the response: the browser reconnects by itself
    board.wait_for("() => window.drops >= 1")
    server.start()  # same port, same database: seq goes on
    stopped_at = board.page.evaluate("() => window.got[window.got.length - 1]")
    board.wait_for("(s) => window.got[window.got.length - 1] >= s + 10", stopped_at)
    got = board.page.evaluate("() => window.got")
    assert got == list(range(got[0], got[0] + len(got)))  # every seq once, none missed


@pytest.mark.page_only
def test_a_float_source_on_the_dashboard_has_no_uniformity_verdict(server_factory, dashboard, tmp_path):
    module = tmp_path / "quarters.py"
    module.write_text(QUARTERS)
    server = server_factory("--interval", "0.2", "--source", f"{module}:read")
    wait_server_seq(server, 5)
    board = dashboard(server)
    board.wait_for("() => document.getElementById('stats').dataset.throughSeq !== ''")
    board.wait_seq_at_least(6)
    state = board.page.evaluate(READ_STATE)
    seq = int(state["seq"])
    _, body = server.get(f"/api/history?after={seq - 1}&limit=1")
    value = body["readings"][0]["value"]
    assert state["value"] == str(value) and "." in state["value"]  # 1.625, not 1 or 2
    assert state["stats"]["chi_square"] == "" and state["stats"]["p_value"] == ""
    assert float(state["stats"]["mean"]) > 0
    page = board.page
    assert page.get_attribute("#dashboard", "data-stats-kind") == "observed"
    assert page.text_content("#stat-verdict") == "not tested: this source has no declared range"
    assert "no uniformity test" in page.text_content("#stats-note")
    assert page.text_content("#stream-range") == "pull"
    assert "lowest 0.375" in state["summary"]
    text = page.inner_text("main") if page.query_selector("main") else page.inner_text("body")
    assert "uniform expectation" not in text and "if the numbers are uniform" not in text
    # The value fits its card, however long a float's digits are.
    fits = page.evaluate("""() => { const v = document.getElementById('current-value');
        return v.scrollWidth <= v.parentElement.clientWidth; }""")
    assert fits, "the current value overflows its card"
    board.assert_clean()
