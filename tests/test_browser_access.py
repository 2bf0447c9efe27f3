"""A private dashboard in Debian's Chromium: the sign-in form, the live page, the sign-out, and
a session that ends while the page is open (it goes back to the form, no reconnect loop)."""

from __future__ import annotations

import time

import pytest
from test_access import OTHER, PROXY, TOKEN, WRONG
from test_browser import Dashboard

pytestmark = pytest.mark.browser
WAIT = 30_000


@pytest.fixture
def private_page(browser, server_factory):
    contexts = []

    def open_page(tokens: str = TOKEN):
        server = server_factory("--interval", "0.2", "--trusted-proxies", PROXY,
                                env={"RANDOM_STREAM_ACCESS_TOKEN": tokens})
        board = Dashboard(browser, server, viewport={"width": 1280, "height": 800})
        contexts.append(board.context)
        board.page.goto(server.url + "/?range=1m")
        return server, board

    yield open_page
    for context in contexts:
        context.close()


def signed_in_live(board: Dashboard, token: str) -> None:
    page = board.page
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#current-value", timeout=WAIT)
    board.wait_for("() => document.getElementById('connection-status').dataset.state === 'live'"
                   " && document.getElementById('current-value').dataset.seq !== ''")


def test_sign_in_go_live_sign_out(private_page):
    server, board = private_page()
    page = board.page
    assert page.locator("#current-value").count() == 0
    assert page.locator("label[for=token]").inner_text() == "Access token"
    assert page.evaluate("document.activeElement.id") == "token"  # ready to paste
    page.fill("#token", WRONG)
    page.click("button[type=submit]")
    alert = page.locator("[role=alert]")
    assert "not right" in alert.inner_text()
    assert page.get_attribute("#token", "aria-invalid") == "true"
    assert page.evaluate("document.cookie") == ""
    signed_in_live(board, TOKEN)
    assert page.url == server.url + "/?range=1m"  # the view asked for, the token nowhere
    (cookie,) = board.context.cookies()
    assert cookie["name"] == "random_stream_session" and cookie["httpOnly"]
    assert cookie["sameSite"] == "Lax" and TOKEN not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
    first = int(page.get_attribute("#current-value", "data-seq"))
    board.wait_seq_at_least(first + 3)
    page.click("text=Sign out")
    page.wait_for_selector("#token", timeout=WAIT)
    assert page.url == server.url + "/signin"
    assert board.context.cookies() == []
    page.goto(server.url + "/")
    assert page.locator("#token").count() == 1 and page.locator("#current-value").count() == 0
    board.assert_clean(allow=("401",))  # the refused page's status, as Chromium logs it


def test_a_session_that_ends_while_the_page_is_open_brings_back_the_form(private_page):
    server, board = private_page(tokens=f"{TOKEN},{OTHER}")
    page = board.page
    signed_in_live(board, TOKEN)
    loads = []
    page.on("load", lambda: loads.append(time.monotonic()))
    server.stop()
    server.env["RANDOM_STREAM_ACCESS_TOKEN"] = OTHER  # the page's token retired
    server.start()
    # The page reconnects, its CONNECT is refused as unauthorized, it reloads: the form.
    page.wait_for_selector("#token", timeout=WAIT)
    assert page.url == server.url + "/?range=1m"
    time.sleep(3)
    assert len(loads) == 1, loads  # one reload, no loop
    page.fill("#token", OTHER)
    page.click("button[type=submit]")
    board.wait_for("() => document.getElementById('connection-status').dataset.state === 'live'")




@pytest.fixture
def elsewhere(tmp_path):
    """elsewhere(html) -> the port of another web server on 127.0.0.1 serving that page at
    "/": open it as http://localhost:PORT/ (another site) or http://127.0.0.1:PORT/ (the
    same site as the dashboard, another origin)."""
    import functools
    import http.server
    import threading

    servers = []

    def serve(html: str) -> int:
        (tmp_path / "index.html").write_text(html)
        site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
            http.server.SimpleHTTPRequestHandler, directory=str(tmp_path)))
        threading.Thread(target=site.serve_forever, daemon=True).start()
        servers.append(site)
        return site.server_address[1]

    yield serve
    for site in servers:
        site.shutdown()
        site.server_close()


@pytest.fixture
def context(browser):
    context = browser.new_context()  # no Dashboard: this page is another origin's
    yield context
    context.close()


def test_another_sites_images_spend_no_wrong_tokens_of_their_viewers_address(
        server_factory, elsewhere, context):
    """A page on another site (localhost is not 127.0.0.1's site) whose images are sign-in
    links with wrong tokens: a visitor's Chromium fetches them all, and its address can
    still sign in."""
    from test_access import bearer, fetch

    server = server_factory("--interval", "0.2", env={"RANDOM_STREAM_ACCESS_TOKEN": TOKEN})
    images = "".join(f'<img src="{server.url}/?token={WRONG}{i}">' for i in range(12))
    port = elsewhere(f"<!doctype html><title>elsewhere</title>{images}")
    page = context.new_page()
    fetched = []  # answered; Chromium then blocks each answer (ORB: HTML is no image)
    for ended in ("requestfinished", "requestfailed"):
        page.on(ended, lambda r: "token=" in r.url and fetched.append(r.url))
    page.goto(f"http://localhost:{port}/", wait_until="load")
    assert len(fetched) == 12, fetched
    assert fetch(server, "/api/stats", headers=bearer()).status == 200  # not 429
    page.goto(server.url + f"/?token={TOKEN}")  # the visitor's own link still signs in
    page.wait_for_selector("#current-value", timeout=WAIT)


def test_a_same_site_page_that_cors_star_lets_in_reads_nothing_with_the_viewers_cookie(
        server_factory, elsewhere, context):
    """Another port of the dashboard's host is the same site: Chromium sends the viewer's
    SameSite=Lax cookie with its polling requests, and `--cors-origins *` lets it read the
    answers. Its CONNECT is refused all the same: the cookie is the dashboard's own."""
    server = server_factory("--interval", "0.2", "--cors-origins", "*",
                            env={"RANDOM_STREAM_ACCESS_TOKEN": TOKEN})
    script = """<script>
      const base = "BASE/socket.io/?EIO=4&transport=polling";
      (async () => {
        const get = async (query, init) => (await fetch(base + query, {credentials: "include", ...init})).text();
        const sid = JSON.parse((await get("")).slice(1)).sid;
        await get("&sid=" + sid, {method: "POST", body: "40"});
        window.answer = await get("&sid=" + sid);
      })();
    </script>""".replace("BASE", server.url)
    port = elsewhere(f"<!doctype html><title>same site</title>{script}")
    page = context.new_page()
    page.goto(server.url + f"/?token={TOKEN}")  # the viewer signs in
    page.wait_for_selector("#current-value", timeout=WAIT)
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_function("window.answer !== undefined", timeout=WAIT)
    answer = page.evaluate("window.answer")
    assert answer.startswith('44{"message":"unauthorized"}'), answer
    assert "history" not in answer and "random_number" not in answer
