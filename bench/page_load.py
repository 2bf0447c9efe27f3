"""Page load: time from navigation to the first number shown, and bytes transferred.

    .venv/bin/python bench/page_load.py [--loads 20] [--history 900]

Starts random_stream.py (``--db :memory:``) on a free 127.0.0.1 port, lets it build up
``--history`` readings quickly, then loads the dashboard in headless Chromium
(/usr/bin/chromium, driven by Playwright) ``--loads`` times with a cold cache and prints,
per load and as median / p90 / max: milliseconds from navigation start to the moment
``#current-value`` first shows a number, and the bytes transferred for the page and its
assets (compressed, as on the wire; the WebSocket's history snapshot is data, not assets).
Each cold load starts a new browser context, so it includes starting a renderer process;
the same loads are then repeated in one open tab with the HTTP cache disabled.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402

# Runs before the page's own scripts: note when #current-value first holds a number.
WATCH_FIRST_NUMBER = """
window.__firstNumberAt = null;
new MutationObserver((_, observer) => {
  const el = document.getElementById('current-value');
  if (el && /^\\d+$/.test(el.textContent.trim())) {
    window.__firstNumberAt = performance.now();
    observer.disconnect();
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def wait_first_number(page) -> float:
    """Milliseconds from navigation start to the first number in #current-value."""
    deadline = time.monotonic() + 10
    while page.evaluate("() => window.__firstNumberAt") is None:
        if time.monotonic() > deadline:
            raise RuntimeError("no number shown within 10 s")
        time.sleep(0.02)
    return page.evaluate("() => window.__firstNumberAt")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loads", type=int, default=20)
    p.add_argument("--history", type=int, default=900, help="readings in the snapshot")
    p.add_argument("--timeline", action="store_true", help="print resource timings per load")
    args = p.parse_args()

    from playwright.sync_api import sync_playwright

    port = harness.free_port()
    interval = 0.01
    log = Path(tempfile.mkdtemp(prefix="page-load-")) / "server.log"
    server = harness.ServerProcess(
        "server",
        [
            harness.PYTHON,
            str(harness.ROOT / "random_stream.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--db",
            ":memory:",
            "--interval",
            str(interval),
            "--history",
            str(args.history),
        ],
        port,
        None,
        log,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        server.wait_ready()
        time.sleep(args.history * interval + 1)  # a full snapshot's worth of readings
        first, sizes, paints, warm = [], [], [], []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium",
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            for _ in range(args.loads):
                context = browser.new_context()  # a cold cache every time
                page = context.new_page()
                page.add_init_script(WATCH_FIRST_NUMBER)
                page.goto(url + "/", wait_until="load")
                first.append(wait_first_number(page))
                paints.append(
                    page.evaluate("""() => {
                    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
                    return fcp ? fcp.startTime : null;
                }""")
                )
                sizes.append(
                    page.evaluate("""() => {
                    const nav = performance.getEntriesByType('navigation')[0];
                    return nav.transferSize + performance.getEntriesByType('resource')
                        .reduce((sum, r) => sum + r.transferSize, 0);
                }""")
                )
                if "--timeline" in sys.argv:
                    print(
                        page.evaluate("""() => JSON.stringify({
                        nav: performance.getEntriesByType('navigation').map(n => [n.responseEnd|0, n.domContentLoadedEventEnd|0, n.loadEventEnd|0]),
                        res: performance.getEntriesByType('resource').map(r => [r.name.split('/').pop(), r.startTime|0, r.responseEnd|0]),
                        first: window.__firstNumberAt|0})""")
                    )
                context.close()
            # The same loads in one tab, the HTTP cache disabled: what a user's browser does
            # when it already runs (no new renderer process to start for each load).
            context = browser.new_context()
            page = context.new_page()
            page.add_init_script(WATCH_FIRST_NUMBER)
            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
            page.goto(url + "/", wait_until="load")  # starts the renderer
            for _ in range(args.loads):
                page.goto(url + "/", wait_until="load")
                warm.append(wait_first_number(page))
            context.close()
            browser.close()
    finally:
        server.stop()
    first.sort()
    p90 = first[min(len(first) - 1, int(0.9 * len(first)))]
    print(f"# bench/page_load.py --loads {args.loads} --history {args.history}")
    print(
        f"first number shown: median {statistics.median(first):.0f} ms, p90 {p90:.0f} ms, "
        f"max {first[-1]:.0f} ms over {len(first)} cold loads"
    )
    warm.sort()
    print(
        f"the same in one open tab, HTTP cache disabled: median {statistics.median(warm):.0f} ms, "
        f"p90 {warm[min(len(warm) - 1, int(0.9 * len(warm)))]:.0f} ms, max {warm[-1]:.0f} ms"
    )
    paints = sorted(p for p in paints if p is not None)
    if paints:
        print(
            f"first contentful paint (the number is in the first paint): median "
            f"{statistics.median(paints):.0f} ms, max {paints[-1]:.0f} ms"
        )
    print(
        f"page + assets transferred: {statistics.median(sizes) / 1024:.1f} KiB "
        f"(median; compressed, with headers)"
    )


if __name__ == "__main__":
    main()
