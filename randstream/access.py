"""Private dashboards (--access-token): who may see the readings.

With tokens set, every way to the readings needs a credential: the page, everything under
/api/ (but POST /api/readings, which --ingest-token guards), /metrics, the event stream and
the Socket.IO namespace. Three credentials, each checked against every token:
- `Authorization: Bearer <token>`: scripts, curl, Prometheus;
- the session cookie that `/?token=...` (a link) or the sign-in form sets: HttpOnly,
  SameSite=Lax, Secure over HTTPS; it holds a signed session, never the token:
  `1.<fingerprint>.<issued>.<expires>.<mac>`, HMAC-SHA256 under a key derived from the token
  it was signed for. So every process with the same tokens accepts it, a restart without
  that token refuses it, and during a rotation a session of any current token is good.
  It counts from the page's own origin and the --cors-origins named, not all `*` admits;
- a Socket.IO CONNECT's auth `{"token": ...}`, for clients on another allowed origin
  (checked in transport/hooks.py before python-socketio sees the CONNECT).

Guard is the WSGI layer (stack.build lists it): requests without a credential get the
sign-in form (the page), a 401 (the rest), or /healthz's status alone. Static files, the
sign-in routes (signin.py) and Engine.IO's own requests pass: a Socket.IO client's
credential is checked at its namespace CONNECT. Wrong tokens are limited per client address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from urllib.parse import parse_qsl

from .admission import Admission
from .config import MAX_TOKEN
from .counters import Counters
from .limits import TokenBucket
from .live import origin_policy
from .sources import INGEST_PATH

log = logging.getLogger(__name__)

COOKIE = "random_stream_session"
LIFETIME = 30 * 86_400  # seconds a session lasts: a month of a wall display, then sign in again
SKEW = 300  # seconds a session's issue time may lie ahead of this clock (another process's)
VERSION = "1"
# The session key: PBKDF2 once per token at start (~40 ms), so that a cookie, which carries
# a MAC under it, is no cheap test for guessing a token offline.
KEY_SALT = b"random-stream session key v1"
KEY_ROUNDS = 200_000
WRONG_PER_MINUTE = 10  # wrong tokens one client address may send, then 429
ADDRESS_TABLE = 4096  # addresses whose wrong tokens are remembered; past it the oldest go
CREDENTIAL = "random_stream.credential"  # environ: "bearer" or "session", set by Guard
SIGN_IN = "/signin"
SIGN_OUT = "/signout"
OPEN = ("/static/", SIGN_IN, SIGN_OUT)  # no readings in them: no credential needed
REFUSED_PAGE = "random_stream.refused_page"  # environ: the page asked without a credential
STATUS_ONLY = "random_stream.status_only"  # environ: /healthz asked without one (web.healthz)
REALM = 'Bearer realm="random-stream"'


class Tokens:
    """The configured tokens: which one a given token is, and the sessions signed for them."""

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self.digests = [hashlib.sha256(t.encode()).digest() for t in tokens]
        keys = [hashlib.pbkdf2_hmac("sha256", t.encode(), KEY_SALT, KEY_ROUNDS) for t in tokens]
        self.fingerprints = [hmac.new(k, b"fingerprint", "sha256").hexdigest()[:16] for k in keys]
        self.keys = dict(zip(self.fingerprints, keys))

    def match(self, given: str) -> int | None:
        """Which token `given` is (its index), or None. Every token is compared, each in
        constant time over digests of one length: the time says neither which nor how much."""
        if len(given) > MAX_TOKEN:
            return None
        digest = hashlib.sha256(given.encode("utf-8", "replace")).digest()
        found = None
        for index, expected in enumerate(self.digests):
            same = hmac.compare_digest(digest, expected)
            found = index if same and found is None else found
        return found

    def sign(self, index: int, now: float) -> str:
        """A session for token `index`, from now for LIFETIME."""
        issued = int(now)
        payload = f"{VERSION}.{self.fingerprints[index]}.{issued}.{issued + LIFETIME}"
        return f"{payload}.{self._mac(self.keys[self.fingerprints[index]], payload)}"

    def valid(self, session: str, now: float) -> bool:
        """Whether a session was signed for a current token and is within its lifetime."""
        parts = session.split(".")
        if len(parts) != 5 or parts[0] != VERSION or not session.isascii():
            return False
        _, fingerprint, issued, expires, mac = parts
        key = self.keys.get(fingerprint)
        if key is None or not (issued.isdigit() and expires.isdigit()
                               and len(issued) <= 12 and len(expires) <= 12):
            return False
        expected = self._mac(key, session.rpartition(".")[0])
        if not hmac.compare_digest(expected.encode(), mac.encode()):
            return False
        issued_at, expires_at = int(issued), int(expires)
        return issued_at - SKEW <= now < expires_at and expires_at - issued_at <= LIFETIME

    @staticmethod
    def _mac(key: bytes, payload: str) -> str:
        digest = hmac.new(key, payload.encode(), "sha256").digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class WrongTokens:
    """Wrong tokens by client address: WRONG_PER_MINUTE, refilled over a minute; past that
    every attempt from the address (a right token too) waits. At most `table` addresses
    are remembered, the oldest forgotten first: a flood costs bounded memory."""

    def __init__(self, per_minute: int = WRONG_PER_MINUTE, table: int = ADDRESS_TABLE,
                 clock=time.monotonic) -> None:
        self.per_minute = per_minute
        self.table = table
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()  # threading mode: requests in parallel

    def retry_after(self, address: str) -> float:
        """Seconds until `address` may try again; 0 if it may now."""
        with self._lock:
            bucket = self.buckets.get(address)
            return 0.0 if bucket is None else bucket.wait(self.clock())

    def failed(self, address: str) -> None:
        now = self.clock()
        with self._lock:
            bucket = self.buckets.get(address)
            if bucket is None:
                while len(self.buckets) >= self.table:
                    del self.buckets[next(iter(self.buckets))]  # the oldest
                bucket = self.buckets[address] = TokenBucket(
                    self.per_minute / 60, self.per_minute, now)
            bucket.take(now)


class Attempt:
    """A token tried: `index` of the token it is, or None; `retry_after` seconds when the
    address is over its wrong tokens (then the token was not even compared)."""

    __slots__ = ("index", "retry_after")

    def __init__(self, index: int | None, retry_after: int = 0) -> None:
        self.index, self.retry_after = index, retry_after


class Access:
    """The tokens, the sessions and the wrong-token limit of one server."""

    def __init__(self, tokens: tuple[str, ...], admission: Admission, counters: Counters,
                 origins: tuple[str, ...] = (), clock=time.time) -> None:
        self.tokens = Tokens(tokens)
        self.count = len(tokens)
        self.admission = admission
        self.counters = counters
        self.clock = clock
        self.wrong = WrongTokens()
        # Where a session cookie counts: the page's own origin and those --cors-origins
        # names. Not every origin `*` lets in: a page on another port of this host or a
        # sibling subdomain is the same site, so the browser sends it the viewer's cookie.
        self.session_origin = origin_policy(tuple(o for o in origins if o != "*"))

    def attempt(self, address: str, given: str) -> Attempt:
        """Try a token from `address`: a wrong one counts against it (and is logged once)."""
        wait = self.wrong.retry_after(address)
        if wait > 0:
            self.counters.refuse("wrong_tokens")
            self.counters.log_once(log, "wrong_tokens", "refused tokens from %s for a while: "
                                   "more than %d wrong ones a minute", address, WRONG_PER_MINUTE)
            return Attempt(None, max(1, round(wait + 0.5)))
        index = self.tokens.match(given)
        if index is None:
            self.wrong.failed(address)
            self.counters.reject("wrong_token")
            self.counters.log_once(log, "wrong_token", "refused a wrong access token from %s",
                                   address)
        return Attempt(index)

    def credential(self, environ) -> tuple[str | None, Attempt | None, bool]:
        """(kind, failed, stale): kind "bearer" or "session" for a good credential, else None;
        `failed` the attempt of a wrong bearer token; `stale` when a session cookie was sent
        that is no longer good (it counts as none, and the answer clears it). A cookie sent
        with an Origin other than session_origin's counts as none."""
        header = environ.get("HTTP_AUTHORIZATION")
        if header:
            scheme, _, given = header.partition(" ")
            if scheme.lower() == "bearer":  # other schemes (a proxy's Basic) are not ours
                tried = self.attempt(self.admission.address(environ), given.strip())
                return ("bearer", None, False) if tried.index is not None else (None, tried, False)
        sessions = cookie_values(environ.get("HTTP_COOKIE", ""))
        origin = environ.get("HTTP_ORIGIN")
        if not sessions or (origin and not self.session_origin(origin, environ)):
            return None, None, False  # another origin's page brings the token itself
        now = self.clock()
        if any(self.tokens.valid(s, now) for s in sessions):
            return "session", None, False
        return None, None, True

    def session_cookie(self, index: int, environ) -> str:
        """The Set-Cookie value of a new session for token `index`."""
        return self._cookie(self.tokens.sign(index, self.clock()), LIFETIME, environ)

    def cleared_cookie(self, environ) -> str:
        return self._cookie("", 0, environ)

    def _cookie(self, value: str, max_age: int, environ) -> str:
        secure = "; Secure" if self.admission.over_https(environ) else ""
        return f"{COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}"


def cookie_values(header: str) -> list[str]:
    """The values of every session cookie in a Cookie header (a browser may send two)."""
    if COOKIE not in header:
        return []
    return [value.strip() for name, _, value in (p.partition("=") for p in header.split(";"))
            if name.strip() == COOKIE]


class Guard:
    """The WSGI layer: a request on its way to the readings needs a credential.

    Passes, without one: static files, the sign-in routes, POST /api/readings (its own
    token) and Engine.IO's requests (a Socket.IO client's credential is checked at its
    CONNECT: transport/hooks.py). `/?token=` goes to the sign-in route, which trades it for
    a session. Without a credential the page is the sign-in form (401), /healthz says its
    status alone, everything else is a 401. A wrong bearer token is a 401, past the limit
    a 429. Answers with readings are marked private (no shared cache keeps them).
    """

    def __init__(self, app, access: Access, engineio_path: str) -> None:
        self.app = app
        self.access = access
        self.engineio_path = engineio_path

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path.startswith(OPEN) or (path == INGEST_PATH and method == "POST"):
            return self.app(environ, start_response)
        engineio = path.startswith(self.engineio_path)
        query = environ.get("QUERY_STRING", "")
        if engineio and "sid=" in query:  # a session's own requests: its CONNECT was checked
            return self.app(environ, start_response)
        page = path == "/" and method in ("GET", "HEAD")
        if page and query and has_token(query):
            environ["PATH_INFO"] = SIGN_IN  # a link: the sign-in route trades it for a session
            return self.app(environ, start_response)
        kind, failed, stale = self.access.credential(environ)
        if failed is not None:
            return self._refuse(environ, start_response, failed)
        if kind is not None:
            environ[CREDENTIAL] = kind
            return self.app(environ, start_response if engineio else _private(start_response))
        if engineio:
            return self.app(environ, start_response)  # the CONNECT decides
        clear = [("Set-Cookie", self.access.cleared_cookie(environ))] if stale else []
        if page:
            environ["PATH_INFO"], environ[REFUSED_PAGE] = SIGN_IN, True
            return self.app(environ, _with_headers(start_response, clear))
        if path == "/healthz":  # open to load balancers: the route says its status alone
            environ[STATUS_ONLY] = True
            return self.app(environ, _with_headers(start_response, clear))
        return _json(start_response, "401 Unauthorized", {"error": (
            "this dashboard is private: send 'Authorization: Bearer <token>', or sign in at "
            f"{SIGN_IN}")}, [("WWW-Authenticate", REALM), *clear])

    def _refuse(self, environ, start_response, failed: Attempt):
        if failed.retry_after:
            return _json(start_response, "429 Too Many Requests", {"error": (
                f"too many wrong tokens from this address; retry in {failed.retry_after} s")},
                [("Retry-After", str(failed.retry_after))])
        return _json(start_response, "401 Unauthorized", {"error": "the token is not right"},
                     [("WWW-Authenticate", REALM + ', error="invalid_token"')])


def _json(start_response, status: str, body: dict, headers=()) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store"), *headers])
    return [data]


def _with_headers(start_response, extra: list):
    if not extra:
        return start_response

    def starting(status, headers, exc_info=None):
        return start_response(status, list(headers) + extra, exc_info)

    return starting


def _private(start_response):
    """Answers with readings: no shared cache (a CDN, a proxy) may keep them for others."""
    def starting(status, headers, exc_info=None):
        if not any(name.lower() == "cache-control" for name, _ in headers):
            headers = [*headers, ("Cache-Control", "private")]
        return start_response(status, headers, exc_info)

    return starting


def has_token(query: str) -> bool:
    return any(name == "token" for name, _ in parse_qsl(query, keep_blank_values=True))
