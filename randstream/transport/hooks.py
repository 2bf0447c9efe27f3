"""The hooks into engine.io: what a connection may do besides the Socket.IO handlers.

Engine.IO offers no hooks of its own, so its three event handlers (connect, message,
disconnect) are wrapped here, in front of python-socketio's, and its WebSocket driver is
wrapped (screen.py) to screen every frame: no library source is patched, and the Socket.IO
handlers in live.py stay plain.

- Every session is counted (admission.py) from engine.io's connect to its disconnect.
- Frames are checked before Engine.IO decodes them: a frame that is not a packet, or
  larger than the buffer limit, closes that client's connection and nothing else; so is
  a polling POST body (check_post, called by stack.py's Admit).
- Client messages pass a per-connection token bucket; over it the client gets one `error`
  event, and a client that keeps going is disconnected.
- Control traffic (pongs, noops, upgrade probes) has a bucket of its own: a client
  answers one ping per interval, so a flood of them closes the connection.
- Binary events and acks are refused: no client of ours sends them, and python-socketio
  would buffer every frame after one until the count it announces has arrived.
- Events without a handler (and our own `connect`/`disconnect`) are dropped here.
- A frame nesting brackets deeper than MAX_NESTING is refused before any JSON decoder
  sees it (Python's recurses, and a RecursionError would end in a traceback).
- A connection that has not joined the namespace within JOIN_TIMEOUT seconds is closed.
- Private dashboards (access.py): a session whose handshake carried no credential joins
  only with a good `token` in its CONNECT's auth; else it gets a CONNECT_ERROR
  `{"message": "unauthorized"}` and is closed (a polling one by the join timeout, after its
  next poll took the answer), before python-socketio sees the packet: with always_connect
  it would acknowledge the CONNECT before any handler of ours could refuse it. The token
  is taken out of the auth before it goes on: no handler or log of the libraries has it.
- At the stop, close_all() closes every session at once.

The rules are limits.py's; what is refused is counted in counters.py. engine.io's
internals are reached through engineio.py's named functions.
"""

from __future__ import annotations

import io
import logging
import threading
import time

from engineio import packet as eio_packet
from socketio import packet as sio_packet

from ..access import CREDENTIAL, Access
from ..admission import Admission
from ..counters import Counters
from ..limits import (
    CONTROL_PACKETS,
    CONTROL_RATE,
    EVENT_RATE,
    JOIN_TIMEOUT,
    MAX_NESTING,
    ClientLimit,
    body_length,
    event_problem,
    frame_is_packet,
    frame_problem,
    message_problem,
    polling_payload_error,
)
from . import engineio as eio_adapter

log = logging.getLogger(__name__)

# What a refused message was, for the one log line of each kind.
MESSAGE_PROBLEMS = {"binary": "a binary Socket.IO packet", "rejoin": "a second join on one connection",
                    "bad_packet": "an event that is no Socket.IO packet"}


class EngineHooks:
    """The limits on one Socket.IO server's connections and client messages."""

    def __init__(self, socketio, admission: Admission, counters: Counters, *,
                 access: Access | None = None, join_timeout: float = JOIN_TIMEOUT,
                 clock=time.monotonic) -> None:
        self.server = socketio.server
        self.eio = socketio.server.eio
        self.admission = admission
        self.counters = counters
        self.clock = clock
        self.limits: dict[str, ClientLimit] = {}  # eio sid -> allowance
        self.address_of: dict[str, str] = {}  # eio sid -> client address
        self.joins = JoinTimeout(socketio, counters, self.close, join_timeout, clock)
        # A private dashboard's CONNECT check; None: public.
        self.credentials = (Credentials(self, access) if access is not None else None)
        self.stopping = False  # close_all() at the stop: the process is about to exit

    def install(self) -> None:
        """Put the hooks in front of engine.io's handlers now (python-socketio's): once."""
        handler = eio_adapter.current_handler
        self.on_connect = handler(self.eio, "connect")
        self.on_message = handler(self.eio, "message")
        self.on_disconnect = handler(self.eio, "disconnect")
        self.eio.on("connect", self.connect)
        self.eio.on("message", self.message)
        self.eio.on("disconnect", self.disconnect)

    # engine.io's events ---------------------------------------------------------------------

    def connect(self, eio_sid, environ):
        self.limits[eio_sid] = ClientLimit(self.clock())
        address = self.address_of[eio_sid] = self.admission.address(environ)
        self.admission.opened(address)
        self.joins.watch(eio_sid)
        if self.credentials is not None:
            self.credentials.opened(eio_sid, environ)
        try:
            return self.on_connect(eio_sid, environ)
        except BaseException:  # engine.io drops the socket without a disconnect event
            if self.limits.pop(eio_sid, None) is not None:
                self.admission.closed(self.address_of.pop(eio_sid, None))
            raise

    def message(self, eio_sid, data):
        limit = self.limits.get(eio_sid)
        if limit is not None:
            verdict = limit.check(self.clock())
            if verdict != "ok":
                self._over_limit(eio_sid, limit, verdict)
                return
        problem = message_problem(data, limit)
        if problem is None and data[:1] == "2":  # an EVENT
            problem = self._screen_event(data)
            if problem == "unknown_event":
                self.counters.reject(problem)
                return
        if problem is not None:
            self._bad_input(eio_sid, problem, MESSAGE_PROBLEMS[problem])
            return
        if self.credentials is not None and data[:1] == "0":
            data = self.credentials.admit(eio_sid, data)
            if data is None:
                return
        try:
            self.on_message(eio_sid, data)
        except Exception as exc:  # the Socket.IO packet did not decode
            self._bad_input(eio_sid, "bad_packet", f"an invalid Socket.IO packet ({exc!r:.80})")
            return
        if data == "1":  # left the default namespace: the join timeout applies again
            self.joins.watch(eio_sid)

    def disconnect(self, eio_sid, reason=None):
        if self.limits.pop(eio_sid, None) is not None:
            self.admission.closed(self.address_of.pop(eio_sid, None))
        self.joins.forget(eio_sid)
        if self.credentials is not None:
            self.credentials.forget(eio_sid)
        if self.stopping:
            # Nothing reads the Socket.IO bookkeeping once the process exits. And on
            # the libraries' own path python-socketio's disconnect scans every room of
            # the namespace (one per client): at the stop that is clients^2 steps, 35 s
            # at 10,000, while the restarted server waits for the port (the fast
            # path's manager visits only the client's own rooms: RoomIndex).
            return None
        return self.on_disconnect(eio_sid, reason)

    # Frames and polling bodies --------------------------------------------------------------

    def screen_frame(self, data, eio_sid: str | None = None) -> bool:
        """Whether a WebSocket frame may go on to engine.io; a bad one is counted and logged."""
        if not frame_is_packet(data):
            reason = frame_problem(data)
            self.counters.reject(reason)
            if reason == "too_deep":
                self.counters.log_once(log, "too_deep", "closed a WebSocket that sent a frame "
                                       "nesting more than %d brackets", MAX_NESTING)
            else:
                self.counters.log_once(log, "bad_frame",
                                       "closed a WebSocket that sent a frame that is no packet")
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
        self.counters.reject("control_flood")
        self.counters.refuse("abuse")
        self.counters.log_once(log, "control_flood", "closed a client that sent over %g "
                               "pongs/noops a second", CONTROL_RATE)
        return False

    def check_post(self, environ, eio_sid: str | None) -> tuple[str, str] | None:
        """A polling POST, read and checked before engine.io, which logs tracebacks or
        stalls on junk: (status, message) to refuse it, or None (the body is put back)."""
        if environ.get("REQUEST_METHOD") != "POST":
            return None
        state = eio_adapter.session_state(self.eio, eio_sid)
        if state is None:
            return None  # engine.io answers the rest itself, with 400 "Invalid session" etc.
        if state == "closed":  # engine.io would raise KeyError here: an HTTP 500
            return "400 Bad Request", "this session is closed; open a new connection"
        limit = self.eio.max_http_buffer_size
        length = body_length(environ)
        if not 0 <= length <= limit:
            self._bad_input(eio_sid, "oversized", f"a polling body of {length} bytes")
            return "413 Request Entity Too Large", f"a request body may have at most {limit} bytes"
        body = environ["wsgi.input"].read(length)
        problem = polling_payload_error(body)
        if problem is not None:
            self._bad_input(eio_sid, "bad_packet", "an invalid polling payload")
            return "400 Bad Request", problem
        parts = body.decode("utf-8").split("\x1e")
        if not all(self.control_ok(eio_sid) for p in parts if p[:1] in CONTROL_PACKETS):
            self.close(eio_sid)
            return "429 Too Many Requests", f"at most {CONTROL_RATE:g} pongs or noops a second"
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return None

    # Closing --------------------------------------------------------------------------------

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

    # Client messages ------------------------------------------------------------------------

    def _over_limit(self, eio_sid: str, limit: ClientLimit, verdict: str) -> None:
        self.counters.reject("rate_limit")
        if verdict == "disconnect":
            self.counters.refuse("abuse")
            self.counters.log_once(log, "abuse",
                                   "disconnected a client that kept sending over the rate limit")
            self.close(eio_sid)
        elif not limit.warned:
            limit.warned = True
            sid = self.server.manager.sid_from_eio_sid(eio_sid, "/")
            if sid is not None:
                message = f"too many messages: at most {EVENT_RATE:g} a second; ignored"
                self.server.emit("error", {"message": message}, to=sid)

    def _screen_event(self, data: str) -> str | None:
        """Why an EVENT packet is dropped here (limits.event_problem), or None to hand it
        to python-socketio."""
        try:
            pkt = self.server.packet_class(encoded_packet=data)
        except Exception:
            return "bad_packet"
        return event_problem(pkt.data, lambda name: eio_adapter.has_event_handler(
            self.server, pkt.namespace, name))

    def _bad_input(self, eio_sid: str, reason: str, detail: str) -> None:
        self.counters.reject(reason)
        self.counters.log_once(log, reason, "closed a client that sent %s", detail)
        self.close(eio_sid)


class Credentials:
    """A private dashboard's CONNECT check (access.py). A session whose handshake carried a
    credential (Guard marked its environ) joins as any; the others only with a good
    `token` in the CONNECT's auth. The token is taken out of the auth either way."""

    def __init__(self, hooks: EngineHooks, access: Access) -> None:
        self.hooks = hooks
        self.server = hooks.server
        self.access = access
        self.unverified: set[str] = set()  # eio sids whose handshake carried no credential

    def opened(self, eio_sid: str, environ) -> None:
        if not environ.get(CREDENTIAL):
            self.unverified.add(eio_sid)

    def forget(self, eio_sid: str) -> None:
        self.unverified.discard(eio_sid)

    def admit(self, eio_sid: str, data: str) -> str | None:
        """The CONNECT packet to hand on (its auth's `token` taken out), or None when
        refused (a CONNECT_ERROR went to the client, which is closed)."""
        if eio_sid not in self.unverified and '"token"' not in data:
            return data  # the handshake's cookie or bearer token: nothing to take out
        try:
            pkt = self.server.packet_class(encoded_packet=data)
        except Exception:
            pkt = None
        auth = pkt.data if pkt is not None and isinstance(pkt.data, dict) else {}
        given = auth.pop("token", None)
        if eio_sid in self.unverified:
            address = self.hooks.address_of.get(eio_sid, "unknown")
            tried = self.access.attempt(address, given) if isinstance(given, str) else None
            if tried is None or tried.index is None:
                self.refuse(eio_sid, pkt.namespace if pkt is not None else None, tried)
                return None
            self.unverified.discard(eio_sid)
        return pkt.encode() if given is not None else data

    def refuse(self, eio_sid: str, namespace: str | None, tried) -> None:
        """Socket.IO's answer to a CONNECT it refuses, then the end of the connection: at
        once on a WebSocket (the close frame follows the answer); a polling client takes the
        answer with its next request, which a closed session would refuse, so the join
        timeout closes it (it cannot join: a second CONNECT closes it too)."""
        message = {"message": "unauthorized"}
        if tried is not None and tried.retry_after:
            message = {"message": "too many wrong tokens from this address",
                       "data": {"retry_after": tried.retry_after}}
        self.hooks.counters.refuse("unauthorized")
        refusal = self.server.packet_class(sio_packet.CONNECT_ERROR, data=message,
                                           namespace=namespace)
        eio_adapter.send_prepared(self.server, eio_sid, eio_adapter.Prepared(
            eio_packet.Packet(eio_packet.MESSAGE, refusal.encode())))
        if eio_adapter.on_websocket(self.server.eio, eio_sid):
            self.hooks.close(eio_sid)


class JoinTimeout:
    """Closes the connections still outside the namespace `timeout` seconds after they
    connected (or left it): one task, running while any connection waits."""

    def __init__(self, socketio, counters: Counters, close, timeout: float = JOIN_TIMEOUT,
                 clock=time.monotonic) -> None:
        self.socketio = socketio
        self.counters = counters
        self.close = close
        self.timeout = timeout
        self.clock = clock
        self.pending: dict[str, float] = {}  # eio sid -> when it connected or left "/"
        self._sweeping = False
        self._lock = threading.Lock()

    def watch(self, eio_sid: str) -> None:
        self.pending[eio_sid] = self.clock()
        with self._lock:
            if self._sweeping:
                return
            self._sweeping = True
        self.socketio.start_background_task(self._sweep)

    def forget(self, eio_sid: str) -> None:
        self.pending.pop(eio_sid, None)

    def _sweep(self) -> None:
        """Close connections still outside the namespace after the timeout; ends when none wait."""
        server = self.socketio.server
        while True:
            self.socketio.sleep(min(1.0, self.timeout / 2))
            now = self.clock()
            for eio_sid, since in list(self.pending.items()):
                try:
                    if eio_adapter.session_state(server.eio, eio_sid) is None:
                        self.pending.pop(eio_sid, None)
                    elif server.manager.sid_from_eio_sid(eio_sid, "/") is not None:
                        self.pending.pop(eio_sid, None)
                    elif now - since >= self.timeout:
                        self.pending.pop(eio_sid, None)
                        self.counters.refuse("join_timeout")
                        self.close(eio_sid)
                except Exception:  # the sweep must outlive one bad connection
                    self.pending.pop(eio_sid, None)
                    log.exception("join-timeout sweep failed for one connection")
            with self._lock:
                if not self.pending:
                    self._sweeping = False
                    return
