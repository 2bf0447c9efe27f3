"""Make the README's screenshots of the dashboard, light and dark.

    .venv/bin/python docs/screenshots.py             # writes docs/img/dashboard-{light,dark}.png

Starts a real `python random_stream.py` on 127.0.0.1 and a free port (a reading every
0.2 s, nothing stored, a fixed seed), waits until a minute of readings is there, opens the
dashboard in headless Chromium (Playwright for Python, Debian's /usr/bin/chromium) once
with `prefers-color-scheme: light` and once dark, shows the 1-minute window (full by
then) and writes one PNG each. The server is stopped at the end, on errors and on Ctrl-C.
Needs the test packages (`bash tests/run --co -q` installs them into .venv).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
INTERVAL = 0.2  # seconds between readings: the 1-minute window holds 300
WINDOW = 60  # the chart window shown, seconds (the page's "1 min")
VIEWPORT = {"width": 1280, "height": 800}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latest_seq(url: str) -> int:
    """The newest reading's seq, 0 before the first (or before the server answers)."""
    try:
        with urllib.request.urlopen(url + "/api/latest", timeout=2) as response:
            return json.load(response)["seq"]
    except (OSError, urllib.error.HTTPError, ValueError, KeyError):
        return 0


def wait_for_readings(server: subprocess.Popen, url: str, count: int, log: Path) -> None:
    """Until `count` readings are there; the server's log if it exits first."""
    deadline = time.monotonic() + count * INTERVAL + 30
    while latest_seq(url) < count:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} readings in time:\n{log.read_text()}")
        time.sleep(0.5)


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)  # a clean stop: exit 0 in well under a second
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def shoot(url: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for scheme in ("light", "dark"):
                # Reduced motion stops the pulsing status dot, so each run draws the same frame.
                context = browser.new_context(viewport=VIEWPORT, color_scheme=scheme,
                                              reduced_motion="reduce")
                page = context.new_page()
                page.goto(url + "/")
                page.click(f'label[for="window-{WINDOW}"]')
                page.wait_for_function(
                    "() => document.getElementById('connection-status').dataset.state === 'live'"
                    " && document.getElementById('stat-count').dataset.value !== ''"
                    " && document.getElementById('chart-summary').textContent.startsWith('Last 1 min')"
                )
                page.wait_for_timeout(500)  # a few more readings and the next animation frame
                path = out / f"dashboard-{scheme}.png"
                page.screenshot(path=str(path), full_page=True)
                written.append(path)
                context.close()
        finally:
            browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img",
                        help="folder for dashboard-light.png and dashboard-dark.png")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with open(log, "w") as log_file:
            server = subprocess.Popen(
                [sys.executable, str(ROOT / "random_stream.py"), "--host", "127.0.0.1",
                 "--port", str(port), "--interval", str(INTERVAL), "--db", ":memory:",
                 "--seed", "18"],
                cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        try:
            print(f"server on {url}; waiting {WINDOW} s for a full chart", flush=True)
            wait_for_readings(server, url, round(WINDOW / INTERVAL) + 5, log)
            for path in shoot(url, args.out):
                print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
                      f"({path.stat().st_size // 1024} KB)")
        finally:
            stop(server)


if __name__ == "__main__":
    main()
