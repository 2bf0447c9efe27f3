"""A private dashboard's sign-in and sign-out (--access-token; access.py decides who may see).

GET /signin is the form, and with `?token=` (a link; Guard forwards `/?token=` here) trades
a good token for a session cookie and a redirect to "/", the token gone from the address
bar. POST /signin does the same for a pasted token; POST /signout clears the cookie. Both
POSTs must come from the page's own origin.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode

from flask import Blueprint, current_app, redirect, render_template, request

from .access import LIFETIME, REALM, REFUSED_PAGE, SIGN_IN, SIGN_OUT, Access
from .live import origin_policy
from .redaction import redact_request_logs

log = logging.getLogger(__name__)

bp = Blueprint("access", __name__)  # named for the feature: app.blueprints["access"]


def _access() -> Access:
    return current_app.extensions["access"]


@bp.get(SIGN_IN)
def sign_in_form():
    """The form; with `?token=` (a link, also `/?token=` forwarded by Guard) the sign-in."""
    keep = kept_query(request.query_string.decode("utf-8", "replace"))
    given = request.args.get("token")
    if given is not None:
        if not opened_as_page():
            return _form(403, "A sign-in link signs in when it is opened, not fetched by "
                              "another page.", keep)
        return _sign_in(given, keep)
    return _form(401 if request.environ.get(REFUSED_PAGE) else 200, keep=keep)


@bp.post(SIGN_IN)
def sign_in():
    if not same_origin():
        return _form(403, "This sign-in came from another site. Sign in here instead.")
    return _sign_in(request.form.get("token", ""), kept_query(request.form.get("keep", "")))


@bp.post(SIGN_OUT)
def sign_out():
    if not same_origin():
        return _form(403, "This sign-out came from another site; you are still signed in.")
    response = redirect(SIGN_IN, 303)
    response.headers["Set-Cookie"] = _access().cleared_cookie(request.environ)
    response.headers["Cache-Control"] = "no-store"
    return response


def _sign_in(given: str, keep: str):
    access = _access()
    tried = access.attempt(access.admission.address(request.environ), given.strip())
    if tried.retry_after:
        response = _form(429, f"Too many wrong tokens from your address. Try again in "
                              f"{tried.retry_after} seconds.", keep)
        response.headers["Retry-After"] = str(tried.retry_after)
        return response
    if tried.index is None:
        return _form(401, "That token is not right. Check it and try again.", keep)
    # 303: the browser follows with a GET of "/", and the token leaves the address bar.
    response = redirect("/" + (f"?{keep}" if keep else ""), 303)
    response.headers["Set-Cookie"] = access.session_cookie(tried.index, request.environ)
    response.headers["Cache-Control"] = "no-store"
    return response


def _form(status: int, error: str | None = None, keep: str = ""):
    response = current_app.make_response(
        (render_template("signin.html", error=error, keep=keep), status))
    response.headers["Cache-Control"] = "no-store"
    if status == 401:
        response.headers["WWW-Authenticate"] = REALM
    return response


def opened_as_page() -> bool:
    """Whether a sign-in link was opened (a navigation to a document), not fetched as an
    image, script or frame: another site's page could fetch ten links with wrong tokens
    from its visitor's browser and spend the address's wrong tokens, locking everyone at
    that address out of signing in. Browsers say which in Sec-Fetch-Dest, which no page
    can set; a client without it (curl, a link preview, a browser before 2023) is tried."""
    dest = request.headers.get("Sec-Fetch-Dest")
    return dest is None or dest == "document"


_same_origin = origin_policy(())


def same_origin() -> bool:
    """A sign-in or sign-out posted from the page's own origin, or by a client that is no
    browser (no CSRF without one). Browsers say where a request comes from in
    Sec-Fetch-Site, which no page's script can set; Origin is no help on its own here:
    under the app's `Referrer-Policy: no-referrer` a browser sends `Origin: null` with
    every form POST, its own site's too. A browser without Sec-Fetch-Site (before 2023)
    is believed when its Origin is ours."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.lower() == "same-origin"
    origin = request.headers.get("Origin")
    return origin is None or _same_origin(origin, request.environ)


def kept_query(query: str) -> str:
    """A query to keep across signing in (`range=7d`...), without the token; the redirect
    goes to "/" with it, nowhere else."""
    pairs = [(k, v) for k, v in parse_qsl(query[:2048], keep_blank_values=True) if k != "token"]
    return urlencode(pairs)


def init_app(app, access: Access | None) -> None:
    """With tokens: the sign-in routes, `private` for the page (its sign-out button), and
    the request lines of the servers' logs redacted."""
    if access is None:
        return
    app.extensions["access"] = access
    app.register_blueprint(bp)
    app.context_processor(lambda: {"private": True})
    redact_request_logs()
    log.info("private dashboard: %d access token(s); sessions last %d days", access.count,
             LIFETIME // 86_400)
