"""The guard: what a connection may do before and besides the Socket.IO handlers.

- A foreign Origin is refused with 403 before Engine.IO sees the request.
- Past --max-connections, a new Engine.IO handshake gets HTTP 503 (polling and WebSocket).
- One client address may hold --max-per-address sessions and open about a tenth of that
  per second (429 beyond); the address comes from X-Forwarded-For only when the peer is
  one of --trusted-proxies.
- A handshake without an Origin that a browser marks cross-site (Sec-Fetch-Site), such as
  another site's <img> or <script>, is refused with 403.
- A connection that has not joined the namespace within JOIN_TIMEOUT seconds is closed.
- Frames are checked before Engine.IO decodes them: a frame that is not a packet, or
  larger than the buffer limit, closes that client's connection and nothing else.
- Client messages pass a per-connection token bucket; over it the client gets one `error`
  event, and a client that keeps going is disconnected.
- Control traffic (pongs, noops, upgrade probes) has a bucket of its own: a client
  answers one ping per interval, so a flood of them closes the connection.
- Binary events and acks are refused: no client of ours sends them, and python-socketio
  would buffer every frame after one until the count it announces has arrived.
- A frame nesting brackets deeper than MAX_NESTING is refused before any JSON decoder
  sees it (Python's recurses, and a RecursionError would end in a traceback).

The rules themselves are in limits.py; the WSGI side (headers, JSON refusals, polling
bodies) in door.py. Engine.IO offers none of these hooks, so the guard wraps its three
event handlers (connect, message, disconnect) and its WebSocket driver: no library source
is patched, and the Socket.IO handlers in live.py stay plain. What that takes of engine.io
is in randstream/transport/ (engineio.py: current_handler, close_session...; screen.py: the
frame check around the WebSocket driver).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time

from .limits import (
    BINARY_PACKETS,
    CONTROL_PACKETS,
    CONTROL_RATE,
    EVENT_RATE,
    MAX_NESTING,
    RESERVED_EVENTS,
    ClientLimit,
    TokenBucket,
    client_address,
    frame_is_packet,
    too_deep,
)
from .transport import engineio as eio_adapter

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 5.0  # seconds an Engine.IO connection may stay outside the namespace
RETRY_AFTER = 5  # seconds, sent with the 503 at the connection cap and the 429 per address
ADDRESS_TABLE = 4096  # addresses whose handshake allowance is remembered before pruning
ADDRESS = "random_stream.client_address"  # environ: the address the limits count
CROSS_SITE = frozenset({"cross-site", "same-site"})  # Sec-Fetch-Site values refused without Origin


class Guard:
    """Limits on connections and client messages for one Socket.IO server."""

    def __init__(self, socketio, max_connections: int, *, join_timeout: float = JOIN_TIMEOUT,
                 clock=time.monotonic, max_per_address: int | None = None,
                 trusted_proxies: tuple[str, ...] = ()) -> None:
        self.socketio = socketio
        self.max_connections = max_connections
        self.max_per_address = max_per_address or max_connections
        self.trusted = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self.per_address: dict[str, int] = {}  # client address -> sessions open now
        self.address_of: dict[str, str] = {}  # eio sid -> client address
        self.handshakes: dict[str, TokenBucket] = {}  # client address -> handshake allowance
        self.others = 0  # long-lived connections that are no Engine.IO session (hold())
        self.join_timeout = join_timeout
        self.clock = clock
        self.limits: dict[str, ClientLimit] = {}  # eio sid -> allowance
        self.pending: dict[str, float] = {}  # eio sid -> when it connected or left "/"
        self.rejected: dict[str, int] = {}  # client input refused, by reason
        self.refused: dict[str, int] = {}  # connections refused or closed, by reason
        self._logged: set[str] = set()
        self._at_cap = False
        self._sweeping = False
        self.stopping = False  # close_all() at the stop: the process is about to exit
        self._lock = threading.Lock()
        # Under threading (flask run, gunicorn --threads) handlers run in parallel: the
        # counts and allowances the limits read are changed under this lock.
        self._counts = threading.Lock()
        self._install_handlers()

    @property
    def open_connections(self) -> int:
        """Engine.IO connections open now, joined or not.

        Counted from engine.io's connect and disconnect events: its `sockets` table keeps
        closed sockets until its service task reaps them (up to ping_timeout later).
        """
        return len(self.limits) + self.others

    def hold(self, environ) -> tuple[str, str] | None:
        """Count a long-lived connection that is no Engine.IO session (say, an event stream).

        Returns a refusal (status, message) like a handshake's, or None: then the caller
        must call release(environ) when the connection ends.
        """
        refusal = self.refusal(environ, {})
        if refusal is None:
            with self._counts:
                self.others += 1
            self._add_address(environ[ADDRESS])
        return refusal

    def release(self, environ) -> None:
        with self._counts:
            self.others -= 1
        self._drop_address(environ[ADDRESS])

    def _add_address(self, address: str) -> None:
        with self._counts:
            self.per_address[address] = self.per_address.get(address, 0) + 1

    def _drop_address(self, address: str | None) -> None:
        with self._counts:
            left = self.per_address.get(address, 0) - 1
            if left > 0:
                self.per_address[address] = left
            else:
                self.per_address.pop(address, None)

    # Wiring -------------------------------------------------------------------------------

    @property
    def eio(self):
        return self.socketio.server.eio

    def init_app(self, app) -> None:
        """Put the door (door.py) in front of Flask-SocketIO's middleware."""
        from .door import Door

        app.wsgi_app = Door(self, app.wsgi_app)

    def _install_handlers(self) -> None:
        eio = self.eio
        on_connect, on_message, on_disconnect = (
            eio_adapter.current_handler(eio, "connect"), eio_adapter.current_handler(eio, "message"),
            eio_adapter.current_handler(eio, "disconnect"),
        )

        def connect(eio_sid, environ):
            self.limits[eio_sid] = ClientLimit(self.clock())
            address = environ.get(ADDRESS) or client_address(environ, self.trusted)
            self.address_of[eio_sid] = address
            self._add_address(address)
            self._watch(eio_sid)
            try:
                return on_connect(eio_sid, environ)
            except BaseException:  # engine.io drops the socket without a disconnect event
                self.limits.pop(eio_sid, None)
                self._drop_address(self.address_of.pop(eio_sid, None))
                raise

        def message(eio_sid, data):
            limit = self.limits.get(eio_sid)
            if limit is not None:
                verdict = limit.check(self.clock())
                if verdict != "ok":
                    self._over_limit(eio_sid, limit, verdict)
                    return
            # Before python-socketio sees it: it would wait for the attachments (and take
            # a lone binary message for one).
            if not isinstance(data, str) or data[:1] in BINARY_PACKETS:
                self._bad_input(eio_sid, "binary", "a binary Socket.IO packet")
                return
            if data[:1] == "0" and limit is not None:
                # A join of "/" answers with the whole `history` snapshot, or with the resume
                # its auth asks for: leaving and joining again would be a resume without
                # resume's limits. Clients join once per connection (they reconnect on a new
                # one). Every CONNECT counts: python-socketio reads "0/," and "0/,{..}" as
                # a join of "/" too, and "/" is the only namespace.
                if limit.joined:
                    self._bad_input(eio_sid, "rejoin", "a second join on one connection")
                    return
                limit.joined = True
            if data[:1] == "2":  # an EVENT
                dropped = self._screen_event(data)
                if dropped == "unknown_event":
                    self._count(self.rejected, dropped)
                    return
                if dropped is not None:
                    self._bad_input(eio_sid, dropped, "an event that is no Socket.IO packet")
                    return
            try:
                on_message(eio_sid, data)
            except Exception as exc:  # the Socket.IO packet did not decode
                self._bad_input(eio_sid, "bad_packet", f"an invalid Socket.IO packet ({exc!r:.80})")
                return
            if data == "1":  # left the default namespace: the join timeout applies again
                self._watch(eio_sid)

        def disconnect(eio_sid, reason=None):
            if self.limits.pop(eio_sid, None) is not None:
                self._drop_address(self.address_of.pop(eio_sid, None))
            self.pending.pop(eio_sid, None)
            if self.stopping:
                # Nothing reads the Socket.IO bookkeeping once the process exits. And on
                # the libraries' own path python-socketio's disconnect scans every room of
                # the namespace (one per client): at the stop that is clients^2 steps, 35 s
                # at 10,000, while the restarted server waits for the port (the fast
                # path's manager visits only the client's own rooms: RoomIndex).
                return None
            return on_disconnect(eio_sid, reason)

        eio.on("connect", connect)
        eio.on("message", message)
        eio.on("disconnect", disconnect)
        # The WebSocket frame check (screen_frame) is wired by randstream.transport, in order.

    # Counting and logging -----------------------------------------------------------------

    def _count(self, table: dict, reason: str) -> None:
        table[reason] = table.get(reason, 0) + 1

    def _log_once(self, key: str, message: str, *args) -> None:
        """The first of each kind, as one line; the metrics count the rest."""
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message + " (further ones are only counted in /metrics)", *args)

    def screen_frame(self, data, eio_sid: str | None = None) -> bool:
        """Whether a WebSocket frame may go on to engine.io; a bad one is counted and logged."""
        if not frame_is_packet(data):
            if isinstance(data, str) and too_deep(data):
                self._count(self.rejected, "too_deep")
                self._log_once("too_deep", "closed a WebSocket that sent a frame nesting "
                               "more than %d brackets", MAX_NESTING)
            else:
                self._count(self.rejected, "bad_packet")
                self._log_once("bad_frame", "closed a WebSocket that sent a frame that is no packet")
            return False
        if isinstance(data, str) and data[:1] in CONTROL_PACKETS and not self.control_ok(eio_sid):
            return False
        return True

    def control_ok(self, eio_sid: str | None) -> bool:
        """Take one control packet from this connection's allowance; False (counted and
        logged once) when it is spent."""
        limit = self.limits.get(eio_sid) if eio_sid is not None else None
        if limit is None or limit.control.take(self.clock()):
            return True
        self._count(self.rejected, "control_flood")
        self._count(self.refused, "abuse")
        self._log_once("control_flood", "closed a client that sent over %g pongs/noops a second",
                       CONTROL_RATE)
        return False

    def close(self, eio_sid: str) -> None:
        """Close one Engine.IO connection without waiting for its queue to drain."""
        eio_adapter.close_session(self.eio, eio_sid)

    def close_all(self) -> None:
        """Close every connection, each with a close packet, without waiting.

        engine.io's own disconnect() waits for each client's queue to drain, which is
        forever for a polling client that does not poll again: a stop would hang. For the
        stop only: the process exits next, so the handlers' own bookkeeping is skipped.
        """
        self.stopping = True
        for eio_sid in eio_adapter.open_sessions(self.eio):
            self.close(eio_sid)

    # Client messages ----------------------------------------------------------------------

    def _over_limit(self, eio_sid: str, limit: ClientLimit, verdict: str) -> None:
        self._count(self.rejected, "rate_limit")
        if verdict == "disconnect":
            self._count(self.refused, "abuse")
            self._log_once("abuse", "disconnected a client that kept sending over the rate limit")
            self.close(eio_sid)
        elif not limit.warned:
            limit.warned = True
            sid = self.socketio.server.manager.sid_from_eio_sid(eio_sid, "/")
            if sid is not None:
                message = f"too many messages: at most {EVENT_RATE:g} a second; ignored"
                self.socketio.server.emit("error", {"message": message}, to=sid)

    def _screen_event(self, data: str) -> str | None:
        """Why an EVENT packet is dropped here, or None to hand it to python-socketio.

        python-socketio dispatches any event name to a handler of that name, so a client
        could fire our `connect`/`disconnect` handlers (and spawns a task per event before
        finding out that no handler exists): only events with a handler pass.
        """
        try:
            pkt = self.socketio.server.packet_class(encoded_packet=data)
        except Exception:
            return "bad_packet"
        if not isinstance(pkt.data, list) or not pkt.data:
            return "bad_packet"
        name = pkt.data[0]
        if (not isinstance(name, str) or name in RESERVED_EVENTS
                or not eio_adapter.has_event_handler(self.socketio.server, pkt.namespace, name)):
            return "unknown_event"
        return None

    def _bad_input(self, eio_sid: str, reason: str, detail: str) -> None:
        self._count(self.rejected, reason)
        self._log_once(reason, "closed a client that sent %s", detail)
        self.close(eio_sid)

    # Never-joining connections --------------------------------------------------------------

    def _watch(self, eio_sid: str) -> None:
        self.pending[eio_sid] = self.clock()
        with self._lock:
            if self._sweeping:
                return
            self._sweeping = True
        self.socketio.start_background_task(self._sweep)

    def _sweep(self) -> None:
        """Close connections still outside the namespace after the timeout; ends when none wait."""
        manager = self.socketio.server.manager
        while True:
            self.socketio.sleep(min(1.0, self.join_timeout / 2))
            now = self.clock()
            for eio_sid, since in list(self.pending.items()):
                try:
                    if eio_adapter.session_state(self.eio, eio_sid) is None:
                        self.pending.pop(eio_sid, None)
                    elif manager.sid_from_eio_sid(eio_sid, "/") is not None:
                        self.pending.pop(eio_sid, None)
                    elif now - since >= self.join_timeout:
                        self.pending.pop(eio_sid, None)
                        self._count(self.refused, "join_timeout")
                        self.close(eio_sid)
                except Exception:  # the sweep must outlive one bad connection
                    self.pending.pop(eio_sid, None)
                    log.exception("join-timeout sweep failed for one connection")
            with self._lock:
                if not self.pending:
                    self._sweeping = False
                    return

    # Handshakes -----------------------------------------------------------------------------

    def refusal(self, environ, query: dict) -> tuple[str, str] | None:
        """(status, message) if this Engine.IO request must be refused before engine.io runs."""
        origin = environ.get("HTTP_ORIGIN")
        policy = self.eio.cors_allowed_origins
        if origin and callable(policy) and not policy(origin, environ):
            self._count(self.refused, "origin")
            self._log_once("origin", "refused a connection from origin %s", origin[:200])
            return "403 Forbidden", "origin not allowed"
        if not origin and environ.get("HTTP_SEC_FETCH_SITE", "").lower() in CROSS_SITE:
            # Another site's <img>, <script> or link: browsers send no Origin on those.
            self._count(self.refused, "cross_site")
            self._log_once("cross_site", "refused a cross-site request without an Origin")
            return "403 Forbidden", "cross-site requests need an allowed Origin"
        if "sid" not in query:  # a new connection
            if self.open_connections >= self.max_connections:
                self._count(self.refused, "max_connections")
                if not self._at_cap:
                    self._at_cap = True
                    log.warning("at the connection cap (%d): refusing new connections with 503",
                                self.max_connections)
                return "503 Service Unavailable", (
                    f"server is at its connection limit ({self.max_connections}); retry later"
                )
            if self._at_cap:
                self._at_cap = False
                log.info("below the connection cap again")
            return self._address_refusal(environ)
        return None

    def _address_refusal(self, environ) -> tuple[str, str] | None:
        address = environ[ADDRESS] = client_address(environ, self.trusted)
        if self.per_address.get(address, 0) >= self.max_per_address:
            self._count(self.refused, "per_address")
            self._log_once("per_address", "refused connections from %s: at the per-address "
                           "limit (%d)", address, self.max_per_address)
            return "429 Too Many Requests", (
                f"at most {self.max_per_address} connections from one address; retry later"
            )
        now = self.clock()
        with self._counts:
            bucket = self.handshakes.get(address)
            if bucket is None:
                if len(self.handshakes) >= ADDRESS_TABLE:
                    self._prune_handshakes(now)
                rate = max(1.0, self.max_per_address / 10)
                bucket = self.handshakes[address] = TokenBucket(rate, self.max_per_address, now)
            allowed = bucket.take(now)
        if not allowed:
            self._count(self.refused, "handshake_rate")
            self._log_once("handshake_rate", "refused handshakes from %s: more than %g a second",
                           address, bucket.rate)
            return "429 Too Many Requests", "too many new connections from one address; retry later"
        return None

    def _prune_handshakes(self, now: float) -> None:
        """Forget allowances that have refilled; if that frees nothing, forget them all."""
        for address, bucket in list(self.handshakes.items()):
            if bucket.tokens + (now - bucket.stamp) * bucket.rate >= bucket.capacity:
                del self.handshakes[address]
        if len(self.handshakes) >= ADDRESS_TABLE:
            self.handshakes.clear()


def library_logger(name: str) -> logging.Logger:
    """A logger for python-socketio/engineio that only speaks at ERROR.

    Given False, the libraries add their own stderr handler (every line printed twice,
    once unformatted); at NOTSET they log every packet at INFO, and at WARNING a client
    can make them log a line per message it sends. Their ERRORs come once per kind.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.ERROR)
    return logger
