"""Admission: which new connections this server takes, before engine.io or a route runs.

- A foreign Origin is refused with 403.
- A request without an Origin that a browser marks cross-site (Sec-Fetch-Site), such as
  another site's <img> or <script>, is refused with 403.
- Past --max-connections, a new connection (an Engine.IO handshake, polling or
  WebSocket, or an event stream) gets HTTP 503.
- One client address may hold --max-per-address connections and open about a tenth of
  that per second (429 beyond); the address comes from X-Forwarded-For only when the peer
  is one of --trusted-proxies.

The connections are counted here: Engine.IO sessions from engine.io's connect and
disconnect events (opened/closed, called by transport/hooks.py), event streams from
their first byte to their end (hold/release, called by sse.py). The WSGI side (the JSON
refusals) is stack.py's Admit.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time

from .counters import Counters
from .limits import TokenBucket, client_address, over_https

log = logging.getLogger(__name__)

ADDRESS_TABLE = 4096  # addresses whose handshake allowance is remembered before pruning
ADDRESS = "random_stream.client_address"  # environ: the address the limits count
CROSS_SITE = frozenset({"cross-site", "same-site"})  # Sec-Fetch-Site values refused without Origin


class Admission:
    """The connection cap, the per-address limits and the origin policy for one server."""

    def __init__(self, counters: Counters, origin_allowed, *, max_per_address: int | None = None,
                 trusted_proxies: tuple[str, ...] = (), clock=time.monotonic) -> None:
        self.counters = counters
        self.origin_allowed = origin_allowed  # (origin, environ) -> bool, as engine.io's CORS
        self.max_per_address = max_per_address or counters.max_connections
        self.trusted = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self.per_address: dict[str, int] = {}  # client address -> connections open now
        self.handshakes: dict[str, TokenBucket] = {}  # client address -> handshake allowance
        self.clock = clock
        self._at_cap = False
        # Under threading (flask run, gunicorn --threads) handlers run in parallel: the
        # counts and allowances the limits read are changed under this lock.
        self._lock = threading.Lock()

    # Counting -----------------------------------------------------------------------------

    def address(self, environ) -> str:
        """The address a connection counts for (refusal() has noted it in the environ)."""
        return environ.get(ADDRESS) or client_address(environ, self.trusted)

    def over_https(self, environ) -> bool:
        """Whether the request came over HTTPS, here or to one of --trusted-proxies."""
        return over_https(environ, self.trusted)

    def opened(self, address: str) -> None:
        """A connection from `address` is open: it counts until closed(address)."""
        with self._lock:
            self.counters.open_connections += 1
            self.per_address[address] = self.per_address.get(address, 0) + 1

    def closed(self, address: str) -> None:
        with self._lock:
            self.counters.open_connections -= 1
            left = self.per_address.get(address, 0) - 1
            if left > 0:
                self.per_address[address] = left
            else:
                self.per_address.pop(address, None)

    def hold(self, environ) -> tuple[str, str] | None:
        """Admit and count a long-lived connection that is no Engine.IO session (an event
        stream). Returns a refusal (status, message) like a handshake's, or None: then the
        caller must call release(environ) when the connection ends."""
        refusal = self.refusal(environ, new=True)
        if refusal is None:
            self.opened(environ[ADDRESS])
        return refusal

    def release(self, environ) -> None:
        self.closed(environ[ADDRESS])

    # Refusals -----------------------------------------------------------------------------

    def refusal(self, environ, new: bool) -> tuple[str, str] | None:
        """(status, message) if this request must be refused before engine.io runs; `new`
        for a new connection (a handshake), which the cap and the address limits apply to."""
        counters = self.counters
        origin = environ.get("HTTP_ORIGIN")
        if origin and not self.origin_allowed(origin, environ):
            counters.refuse("origin")
            counters.log_once(log, "origin", "refused a connection from origin %s", origin[:200])
            return "403 Forbidden", "origin not allowed"
        if not origin and environ.get("HTTP_SEC_FETCH_SITE", "").lower() in CROSS_SITE:
            # Another site's <img>, <script> or link: browsers send no Origin on those.
            counters.refuse("cross_site")
            counters.log_once(log, "cross_site", "refused a cross-site request without an Origin")
            return "403 Forbidden", "cross-site requests need an allowed Origin"
        if not new:
            return None
        if counters.open_connections >= counters.max_connections:
            counters.refuse("max_connections")
            if not self._at_cap:
                self._at_cap = True
                log.warning("at the connection cap (%d): refusing new connections with 503",
                            counters.max_connections)
            return "503 Service Unavailable", (
                f"server is at its connection limit ({counters.max_connections}); retry later"
            )
        if self._at_cap:
            self._at_cap = False
            log.info("below the connection cap again")
        return self._address_refusal(environ)

    def _address_refusal(self, environ) -> tuple[str, str] | None:
        counters = self.counters
        address = environ[ADDRESS] = client_address(environ, self.trusted)
        if self.per_address.get(address, 0) >= self.max_per_address:
            counters.refuse("per_address")
            counters.log_once(log, "per_address", "refused connections from %s: at the "
                              "per-address limit (%d)", address, self.max_per_address)
            return "429 Too Many Requests", (
                f"at most {self.max_per_address} connections from one address; retry later"
            )
        now = self.clock()
        with self._lock:
            bucket = self.handshakes.get(address)
            if bucket is None:
                if len(self.handshakes) >= ADDRESS_TABLE:
                    self._prune_handshakes(now)
                rate = max(1.0, self.max_per_address / 10)
                bucket = self.handshakes[address] = TokenBucket(rate, self.max_per_address, now)
            allowed = bucket.take(now)
        if not allowed:
            counters.refuse("handshake_rate")
            counters.log_once(log, "handshake_rate", "refused handshakes from %s: more than %g "
                              "a second", address, bucket.rate)
            return "429 Too Many Requests", "too many new connections from one address; retry later"
        return None

    def _prune_handshakes(self, now: float) -> None:
        """Forget allowances that have refilled; if that frees nothing, forget them all."""
        for address, bucket in list(self.handshakes.items()):
            if bucket.tokens + (now - bucket.stamp) * bucket.rate >= bucket.capacity:
                del self.handshakes[address]
        if len(self.handshakes) >= ADDRESS_TABLE:
            self.handshakes.clear()
