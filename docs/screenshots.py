"""Make the README's screenshots of the dashboard, light and dark, and of the sign-in form.

    .venv/bin/python docs/screenshots.py   # writes docs/img/dashboard-{light,dark}.png,
                                           # docs/img/dashboard-7d-{light,dark}.png,
                                           # docs/img/dashboard-phone-{light,dark}.png and
                                           # docs/img/signin-{light,dark,phone}.png
    .venv/bin/python docs/screenshots.py --only signin   # the sign-in form's alone (seconds)

Starts a real `python random_stream.py` on 127.0.0.1 and a free port (a reading every
0.2 s, nothing stored, a fixed seed), waits until a minute of readings is there, opens the
dashboard in headless Chromium (Playwright for Python, Debian's /usr/bin/chromium) once
with `prefers-color-scheme: light` and once dark, shows the 1-minute window (full by
then) and writes one PNG each; two event streams (GET /api/stream) are open beside the
page, so its header says "3 watching". Then the same at a phone's width (390 x 760, the
screen's worth). Then the 7-day view: a second server on a database of a
week of readings, one a second (made here as an older version of the program left it, so
the server builds its rollups at start; no readings for three hours two days ago), the
pointer on a bucket for its readout. Then a private dashboard's sign-in form (a server with
--access-token): light, dark after a wrong token (its error shown), and at a phone's width.
The servers are stopped at the end, on errors and on
Ctrl-C. Needs the test packages (`bash tests/run --co -q` installs them into .venv).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import sqlite3
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
OTHER_VIEWERS = 2  # event streams open beside the page: the header says "3 watching"
WEEK = 7 * 86_400
OUTAGE = (2 * 86_400, 2 * 86_400 - 3 * 3600)  # seconds before now with no readings, for the 7-day view
PHONE = {"width": 390, "height": 760}
# The sign-in form's shots: (file, colour scheme, viewport, a wrong token tried first)
SIGNIN_SHOTS = (("signin-light", "light", VIEWPORT, False), ("signin-dark", "dark", VIEWPORT, True),
                ("signin-phone", "light", PHONE, False))


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


def wait_for_answer(server: subprocess.Popen, url: str, log: Path) -> None:
    """Until the server answers /healthz (which stays open on a private dashboard)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # an answer all the same
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer:\n{log.read_text()}") from None
            time.sleep(0.2)


def report(paths: list[Path]) -> None:
    for path in paths:
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
              f"({path.stat().st_size // 1024} KB)")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)  # a clean stop: exit 0 in well under a second
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def a_week_of_readings(path: Path) -> None:
    """A version-0 database (from before rollups): a reading a second for 7 days, but OUTAGE."""
    sys.path.insert(0, str(ROOT))
    from randstream.stats import Stats

    rng = random.Random(20)
    end = time.time()
    stats = Stats(0, 100)
    rows = []
    for i in range(WEEK):
        ts = end - WEEK + i
        if not OUTAGE[1] < end - ts <= OUTAGE[0]:
            value = rng.randint(0, 100)
            rows.append((len(rows) + 1, value, ts))
            stats.add(value, len(rows))
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE readings (seq INTEGER PRIMARY KEY, value INTEGER NOT NULL, ts REAL NOT NULL);"
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        )
        db.executemany("INSERT INTO readings VALUES (?, ?, ?)", rows)
        db.executemany("INSERT INTO meta VALUES (?, ?)",
                       [("last_seq", str(len(rows))), ("stats", json.dumps(stats.state()))])
    db.close()


def start_server(port: int, log: Path, *args: str) -> subprocess.Popen:
    with open(log, "w") as log_file:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "random_stream.py"), "--host", "127.0.0.1",
             "--port", str(port), *args],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )


def event_stream(url: str) -> socket.socket:
    """An open GET /api/stream that reads nothing (for a few seconds the server buffers)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(f"GET /api/stream HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    return sock


def screenshots(out: Path, shots) -> list[Path]:
    """Each of `shots`, (file name, colour scheme, viewport, prepare(page)), in a browser
    context of its own: prepare() brings the page to what is shown, then a PNG of the whole
    page (of the screen's worth at a phone's width)."""
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for name, scheme, viewport, prepare in shots:
                # Reduced motion stops the pulsing status dot, so each run draws the same frame.
                context = browser.new_context(viewport=viewport, color_scheme=scheme,
                                              reduced_motion="reduce")
                page = context.new_page()
                prepare(page)
                path = out / f"{name}.png"
                page.screenshot(path=str(path), full_page=viewport != PHONE)
                written.append(path)
                context.close()
        finally:
            browser.close()
    return written


def shoot(url: str, out: Path, week_url: str | None = None) -> list[Path]:
    def last_minute(page) -> None:
        page.goto(url + "/")
        page.click(f'label[for="window-{WINDOW}"]')
        page.wait_for_function(
            "(n) => document.getElementById('connection-status').dataset.state === 'live'"
            " && document.getElementById('stat-count').dataset.value !== ''"
            " && document.getElementById('viewers').dataset.count === String(n)"
            " && document.getElementById('chart-summary').textContent.startsWith('Last 1 min')",
            arg=OTHER_VIEWERS + 1,
        )
        page.wait_for_timeout(500)  # a few more readings and the next animation frame

    def a_week(page) -> None:
        page.goto(week_url + "/?range=7d")
        page.wait_for_function(
            "() => { const c = document.getElementById('line-chart').dataset;"
            " return c.view === '7d' && c.loading === 'false' && Number(c.drawn) > 0"
            " && document.getElementById('stat-count').dataset.value !== ''; }"
        )
        box = page.locator("#line-chart").bounding_box()
        page.mouse.move(box["x"] + 40 + (box["width"] - 52) * 0.62, box["y"] + box["height"] / 2)
        page.wait_for_function("() => document.getElementById('chart-readout').dataset.kind === 'bucket'")
        page.wait_for_timeout(300)

    shots = [(f"dashboard-{size}{scheme}", scheme, viewport, last_minute)
             for size, viewport in (("", VIEWPORT), ("phone-", PHONE)) for scheme in ("light", "dark")]
    if week_url:
        shots += [(f"dashboard-7d-{scheme}", scheme, VIEWPORT, a_week) for scheme in ("light", "dark")]
    others = [event_stream(url) for _ in range(OTHER_VIEWERS)]
    try:
        return screenshots(out, shots)
    finally:
        for sock in others:
            sock.close()


def shoot_signin(url: str, out: Path) -> list[Path]:
    """A private dashboard's page without a session: the sign-in form."""
    def form(wrong: bool):
        def prepare(page) -> None:
            page.goto(url + "/")
            if wrong:
                page.fill("#token", "not-the-right-token")
                page.click("button[type=submit]")
                page.wait_for_selector("[role=alert]")
            page.wait_for_timeout(200)
        return prepare

    return screenshots(out, [(name, scheme, viewport, form(wrong))
                             for name, scheme, viewport, wrong in SIGNIN_SHOTS])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img",
                        help="folder for the PNGs")
    parser.add_argument("--only", choices=("dashboard", "signin"),
                        help="make only these (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only != "dashboard":
        shots(args.out, "signin")
    if args.only != "signin":
        shots(args.out, "dashboard")


def shots(out: Path, which: str) -> None:
    port, week_port = free_port(), free_port()
    url, week_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{week_port}"
    if which == "signin":
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "private.log"
            server = start_server(port, log, "--db", ":memory:",
                                  "--access-token", "screenshots-only-token-0123")
            try:
                wait_for_answer(server, f"http://127.0.0.1:{port}", log)
                report(shoot_signin(f"http://127.0.0.1:{port}", out))
            finally:
                stop(server)
        return
    with tempfile.TemporaryDirectory() as tmp:
        log, week_log = Path(tmp) / "server.log", Path(tmp) / "week.log"
        db = Path(tmp) / "week.sqlite3"
        a_week_of_readings(db)
        server = start_server(port, log, "--interval", str(INTERVAL), "--db", ":memory:", "--seed", "18")
        week = start_server(week_port, week_log, "--interval", "1", "--db", str(db), "--seed", "18")
        try:
            print(f"servers on {url} and {week_url}; waiting {WINDOW} s for a full chart", flush=True)
            wait_for_readings(server, url, round(WINDOW / INTERVAL) + 5, log)
            report(shoot(url, out, week_url))
        finally:
            stop(server)
            stop(week)


if __name__ == "__main__":
    main()
