"""Limits: what one client may send and how much, as small pure rules.

Token buckets for messages and control traffic, the checks a request, a WebSocket frame,
a polling body or a Socket.IO message must pass before engine.io or python-socketio
decodes it, and which address a connection counts for. No I/O and no library state here:
each rule is tested directly (tests/test_security.py). Admission (admission.py) and the
hooks into engine.io (transport/hooks.py) apply them and count what they refuse.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress

from engineio import packet as eio_packet
from engineio import payload as eio_payload

EVENT_RATE = 10.0  # client messages per second, sustained
EVENT_BURST = 30  # client messages at once
STRIKES = 50  # messages dropped over the limit (refilled 1/s) before a disconnect
CONTROL_RATE = 2.0  # pongs, noops and upgrade probes per second, sustained
CONTROL_BURST = 20  # of them at once; a client needs one pong per ping interval
MAX_NESTING = 32  # brackets per frame: ours nest 2 deep; json recurses per level
JOIN_TIMEOUT = 5.0  # seconds an Engine.IO connection may stay outside the namespace
# Request bodies: the server reads one whole before the application runs, in at most
# BODY_GRACE + its length / BODY_RATE seconds (13 s for the largest); a larger one is not
# read at all. Every body a client of ours sends is a few bytes, and arrives at once.
BODY_LIMIT = 64 * 1024  # bytes: the largest body a route takes (engine.io's max_http_buffer_size)
BODY_GRACE = 5.0  # seconds, as for the request's headers
BODY_RATE = 8 * 1024  # bytes per second, at least, past the grace

RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error"})  # never from a client
# Packet types a client may send over polling; engine.io stalls the POST on the others.
POLLING_PACKET_TYPES = {eio_packet.CLOSE, eio_packet.PONG, eio_packet.MESSAGE, eio_packet.UPGRADE}
# Engine.IO packets that are not messages and cost the server work: ping, pong, upgrade, noop.
CONTROL_PACKETS = frozenset("2356")
# Socket.IO BINARY_EVENT and BINARY_ACK: python-socketio then waits for attachments.
BINARY_PACKETS = frozenset("56")


class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; take() says whether one was left."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = float(capacity)
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until take() would succeed (0 if it would now); takes nothing."""
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


class ClientLimit:
    """One connection's allowance: messages, then strikes for messages over the limit."""

    def __init__(self, now: float, rate: float = EVENT_RATE, burst: int = EVENT_BURST,
                 strikes: int = STRIKES) -> None:
        self.messages = TokenBucket(rate, burst, now)
        self.strikes = TokenBucket(1.0, strikes, now)
        self.control = TokenBucket(CONTROL_RATE, CONTROL_BURST, now)
        self.warned = False  # an `error` event went out since the last accepted message
        self.joined = False  # joins the namespace once: each join is a `history` snapshot

    def check(self, now: float) -> str:
        """'ok', 'drop' (over the limit) or 'disconnect' (over it for too long)."""
        if self.messages.take(now):
            self.warned = False
            return "ok"
        return "drop" if self.strikes.take(now) else "disconnect"


def message_problem(data, limit: ClientLimit | None) -> str | None:
    """Why a Socket.IO message is refused before python-socketio sees it, or None.

    'binary': python-socketio would wait for the attachments a binary event or ack
    announces (and take a lone binary message for one). 'rejoin': a join of "/" answers
    with the whole `history` snapshot, or with the resume its auth asks for, so leaving
    and joining again would be a resume without resume's limits; clients join once per
    connection (they reconnect on a new one). Every CONNECT counts: python-socketio reads
    "0/," and "0/,{..}" as a join of "/" too, and "/" is the only namespace. A first join
    marks `limit` joined.
    """
    if not isinstance(data, str) or data[:1] in BINARY_PACKETS:
        return "binary"
    if data[:1] == "0" and limit is not None:
        if limit.joined:
            return "rejoin"
        limit.joined = True
    return None


def event_problem(args, has_handler) -> str | None:
    """Why a decoded EVENT (its data, `[name, *args]`) is dropped, or None to dispatch it.

    python-socketio dispatches any event name to a handler of that name, so a client could
    fire our `connect`/`disconnect` handlers (and spawns a task per event before finding
    out that no handler exists): only names `has_handler(name)` knows pass.
    """
    if not isinstance(args, list) or not args:
        return "bad_packet"
    name = args[0]
    if not isinstance(name, str) or name in RESERVED_EVENTS or not has_handler(name):
        return "unknown_event"
    return None


def frame_is_packet(data) -> bool:
    """Whether a WebSocket frame decodes as an Engine.IO packet (binary frames are messages)."""
    if isinstance(data, (bytes, bytearray)):
        return True
    if not isinstance(data, str) or not data:
        return False
    if data[0] == "b":  # base64 binary message
        try:
            base64.b64decode(data[1:], validate=True)
        except (binascii.Error, ValueError):
            return False
        return True
    return "0" <= data[0] <= "6" and not too_deep(data)


def frame_problem(data) -> str:
    """Why a frame that is no packet (frame_is_packet is False) is one: 'too_deep' or
    'bad_packet'."""
    return "too_deep" if isinstance(data, str) and too_deep(data) else "bad_packet"


def too_deep(text: str) -> bool:
    """Whether `text` may nest brackets deeper than MAX_NESTING (counted, not parsed: an
    upper bound, and two C-speed scans)."""
    return text.count("[") + text.count("{") > MAX_NESTING


def query_problem(environ) -> str | None:
    """werkzeug decodes the query as strict UTF-8 when a route reads it: a 500 otherwise."""
    try:
        environ.get("QUERY_STRING", "").encode("latin-1").decode("utf-8")
    except UnicodeError:
        return "the query string is not valid UTF-8"
    return None


def upgrade_problem(environ) -> str | None:
    """A WebSocket upgrade must be RFC 6455's: eventlet answers one without a key with its
    pre-standard (hixie) handshake or a 500, after engine.io opened a session."""
    if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
        return None
    if not environ.get("HTTP_SEC_WEBSOCKET_KEY") or \
            environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        return "a WebSocket upgrade needs Sec-WebSocket-Key and version 13"
    return None


def body_length(environ) -> int:
    """A request's Content-Length (0 when absent), or -1 when it is no number."""
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return -1


def body_to_read(environ) -> int | None:
    """How many bytes of a request's body the server reads before the application runs:
    0 (none, or a WebSocket upgrade, whose later bytes are frames), its Content-Length, up
    to BODY_LIMIT + 1 of a chunked one (more is too large), or None when its Content-Length
    is over BODY_LIMIT: then it is not read, the application answers from its length."""
    if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
        return 0
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        return BODY_LIMIT + 1
    length = body_length(environ)
    if length > BODY_LIMIT:
        return None
    return max(0, length)


def body_deadline(length: int) -> float:
    """Seconds a body of `length` bytes (BODY_LIMIT at most counted) may take to arrive."""
    return BODY_GRACE + min(length, BODY_LIMIT) / BODY_RATE


def client_address(environ, trusted: tuple = ()) -> str:
    """The address a connection counts for: the peer's, or from X-Forwarded-For when the
    peer is trusted; as limit_key() spells it.

    X-Forwarded-For is read from the right (the hop nearest us) past every trusted proxy;
    what a client wrote at the left end is never believed.
    """
    peer = _ip(environ.get("REMOTE_ADDR") or "")
    if peer is None:
        return environ.get("REMOTE_ADDR") or "unknown"  # a Unix socket, say: one key for all
    address = peer
    if trusted and _is_trusted(peer, trusted):
        hops = [h.strip() for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        for hop in reversed(hops):
            ip = _ip(hop)
            if ip is None:
                break  # garbage: the last trusted hop is the best we know
            address = ip
            if not _is_trusted(ip, trusted):
                break
    return limit_key(address)


def over_https(environ, trusted: tuple = ()) -> bool:
    """Whether the client's request came over HTTPS: to this server, or to a trusted proxy
    that says so in X-Forwarded-Proto (its first value: the proxy nearest the client). From
    anyone else the header is ignored, as X-Forwarded-For is."""
    if environ.get("wsgi.url_scheme") == "https":
        return True
    proto = environ.get("HTTP_X_FORWARDED_PROTO")
    if not proto or not trusted:
        return False
    peer = _ip(environ.get("REMOTE_ADDR") or "")
    return (peer is not None and _is_trusted(peer, trusted)
            and proto.split(",")[0].strip().lower() == "https")


def peer_key(peer, trusted: tuple = ()) -> str | None:
    """The key a connection waiting for its request counts under, from its TCP peer
    (`(host, port, ...)` as accept() gives it): limit_key's, or None when the peer is a
    trusted proxy (many clients: the headers naming them are not in yet) or no IP."""
    ip = _ip(peer[0]) if isinstance(peer, tuple) and peer and isinstance(peer[0], str) else None
    if ip is None or (trusted and _is_trusted(ip, trusted)):
        return None
    return limit_key(ip)


def limit_key(ip) -> str:
    """One key per client: an IPv4 address, or an IPv6 /64 (one host's usual allotment:
    counting single IPv6 addresses would give one client 2^64 allowances)."""
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _ip(text: str):
    """An address as IPv4 or IPv6 (an IPv4-mapped IPv6 one as IPv4), a port stripped
    (`1.2.3.4:80`, `[2001:db8::1]:80`, as some proxies write it); None if it is none."""
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped else ip


def _is_trusted(ip, trusted: tuple) -> bool:
    return any(ip.version == net.version and ip in net for net in trusted)


def polling_payload_error(body: bytes) -> str | None:
    """Why a polling POST body is not a payload a client may send, or None if it is."""
    try:
        text = body.decode("utf-8")
        if text and not text.startswith("d=") and not all(
            frame_is_packet(part) for part in text.split("\x1e")
        ):
            return "not an Engine.IO payload"
        packets = eio_payload.Payload(encoded_payload=text).packets
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, binascii.Error, RecursionError):
        return "not an Engine.IO payload"
    if any(p.packet_type not in POLLING_PACKET_TYPES for p in packets):
        return "Engine.IO packet type not accepted from a client"
    return None
