"""Chromium against sources other than random, and EventSource on GET /api/stream."""

from __future__ import annotations

import pytest
from test_browser import READ_STATE, browser, dashboard, wait_server_seq  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser

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


def test_eventsource_in_chromium_reads_the_stream(server_factory, dashboard):  # noqa: F811
    server = server_factory("--interval", "0.1")
    board = dashboard(server)
    events = board.page.evaluate(COLLECT_EVENTS, ["/api/stream?after=0", 12])
    seqs = [e["data"]["seq"] for e in events]
    assert seqs == list(range(1, 13))
    assert all(e["id"] == str(e["data"]["seq"]) for e in events)
    assert all(0 <= e["data"]["value"] <= 100 for e in events)
    board.assert_clean()


def test_eventsource_reconnects_with_last_event_id_and_loses_nothing(server_factory, dashboard, tmp_path):  # noqa: F811
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


def test_a_float_source_on_the_dashboard_has_no_uniformity_verdict(server_factory, dashboard, tmp_path):  # noqa: F811
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
    board.assert_clean()
