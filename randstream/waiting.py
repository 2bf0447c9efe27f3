"""Connections that wait for a request: counted, capped per process and per address.

A connection waits from the moment it is accepted (or idle in keep-alive after an answer)
until its request line, headers and body are in; then the application has it. Waiting
connections are no sessions, and --max-connections does not see them: here they are
counted, and past a cap a silent one is closed (server.py's listener and the runtimes'
HTTP protocols in randstream/transport call add and discard). Plain answers in progress,
the other kind of connection that is no session, are capped by stack.Answering.

Imported by server.py before eventlet or gevent patch the standard library: nothing here
may import more than the standard library at module level.
"""

from __future__ import annotations

import itertools
import logging
import socket
import struct
import time
from collections import OrderedDict

try:
    import fcntl
    import termios
except ImportError:  # Windows: every waiting connection counts as silent
    fcntl = termios = None

from .counters import Counters

log = logging.getLogger(__name__)

WAITING_LIMIT = 1024  # connections waiting for a request; past it the oldest is closed
PER_ADDRESS = 64  # of them from one client address; past it that address's oldest is closed
KEYS_KEPT = 4096  # client addresses whose key is remembered
# Plain HTTP answers (the page, static files, the API) in progress at once (stack.Answering):
# each takes milliseconds, unless its client stops reading a large one (then up to the
# send timeout).
PLAIN_ANSWERS = 256
# Descriptors one of them holds: its socket, and a static file's own (send_file keeps the
# file open until its client has read it all).
ANSWER_DESCRIPTORS = 2
# Of them for one client address (limits.client_address: behind --trusted-proxies, the
# forwarded one): without it one address's stalled answers took all 256, and the page was
# a 503 for everyone. A browser loads at most 6 at once: 64 is ten page loads in the same
# milliseconds behind one NAT.
ANSWERS_PER_ADDRESS = 64


class Waiting:
    """Connections that wait for a request (new, idle in keep-alive, sending headers or a
    body), and the caps on them.

    Past `limit` a silent one (nothing unread in the kernel), the oldest among the SCAN
    longest waiting, is closed: silent sockets can fill neither the server's slots nor its
    descriptors, a new connection always gets in, and a request being answered is never
    cut. Past `per_address` from one address (its key: limits.peer_key; trusted proxies
    have none) that address's own oldest silent one is closed, so one address cannot hold
    the room of others, and many real clients behind one address (a NAT) still get in:
    their requests arrive whole and are read at once, never silent while they wait.

    A connection whose request the kernel holds unread is the server being behind (a
    restart's herd of reconnects), not a silent peer: closing it would waste the work
    done on it and send a real client into its backoff. If the SCAN oldest are all such,
    the listener stops accepting for a moment instead (`has_room`), and new connections
    wait in the kernel's queue, which costs nothing. (On Linux a new connection is
    accepted only once its request is in, see server.bind().)
    """

    SCAN = 64
    # A scan that found no silent connection is not repeated for this long: until the loop
    # has turned, nobody read anything, and a burst of new connections from one address
    # (3,000 half-sent headers) made every accept scan its 64 again: 440,000 ioctl calls,
    # a second of work, and a /healthz waited behind it.
    RESCAN = 0.002

    def __init__(self, limit: int, per_address: int = PER_ADDRESS, counters=None,
                 trusted: tuple = (), clock=time.monotonic) -> None:
        self.limit = limit
        self.per_address = per_address
        # Evictions and cut bodies by reason, for /metrics; the first of each kind is logged.
        self.counters = counters if counters is not None else Counters(0)
        self.trusted = trusted  # limits.peer_key's trusted proxies
        self.keys: dict = {}  # peer host -> its key: parsed once, not per connection
        self.sockets: OrderedDict = OrderedDict()  # socket -> its address key, oldest first
        self.addresses: dict[str, OrderedDict] = {}  # address key -> its sockets, oldest first
        self.evicted = 0
        self.clock = clock
        self.scanned_full: dict = {}  # address key (None: all) -> when a scan found none silent

    def __len__(self) -> int:
        return len(self.sockets)

    def add(self, sock, peer=None) -> None:
        """`sock` (from `peer`, accept()'s address) waits for a request from now on."""
        self.discard(sock)
        key = self.key(peer) if peer is not None else None
        self.sockets[sock] = key
        if key is not None:
            mine = self.addresses.setdefault(key, OrderedDict())
            mine[sock] = None
            while len(mine) > self.per_address and self._evict_from(mine, "waiting_per_address", key):
                pass
        while len(self.sockets) > self.limit and self.evict():
            pass

    def key(self, peer) -> str | None:
        """limits.peer_key of accept()'s address `peer`."""
        host = peer[0] if isinstance(peer, tuple) and peer else peer
        try:
            return self.keys[host]
        except KeyError:
            pass
        from .limits import peer_key  # (it imports engine.io: not before the patching)

        if len(self.keys) >= KEYS_KEPT:
            self.keys.clear()
        key = self.keys[host] = peer_key(peer, self.trusted)
        return key

    def discard(self, sock) -> None:
        key = self.sockets.pop(sock, None)
        if key is not None:
            mine = self.addresses[key]
            del mine[sock]
            if not mine:
                del self.addresses[key]
                self.scanned_full.pop(key, None)

    def has_room(self) -> bool:
        """Whether another connection may be accepted, closing a silent one if need be."""
        return len(self.sockets) < self.limit or self.evict()

    def evict(self) -> bool:
        """Close the longest-waiting silent connection; False if the SCAN longest waiting
        all have their requests unread (the server is behind) or none waits."""
        return self._evict_from(self.sockets, "waiting_limit", None)

    def _evict_from(self, sockets: OrderedDict, reason: str, key) -> bool:
        now = self.clock()
        if now - self.scanned_full.get(key, float("-inf")) < self.RESCAN:
            return False  # found none silent a moment ago: the server is behind
        sock = next((s for s in itertools.islice(sockets, self.SCAN) if not unread_bytes(s)), None)
        if sock is None:
            self.scanned_full[key] = now
            return False
        self.discard(sock)
        self.evicted += 1
        if reason == "waiting_limit":
            self.report(reason, "more than %d connections wait for a request: closing the "
                        "longest-waiting ones", self.limit)
        else:
            self.report(reason, "more than %d connections from one address wait for a "
                        "request: closing its longest-waiting ones", self.per_address)
        try:  # its task, blocked reading, sees the end of the stream and closes it
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def report(self, reason: str, message: str, *args) -> None:
        """A connection closed or refused for `reason`: counted, the first of each kind logged."""
        self.counters.refuse(reason)
        self.counters.log_once(log, reason, message, *args)


def unread_bytes(sock) -> int:
    """Bytes the kernel holds for `sock` that nobody has read yet (0 where unknown)."""
    if fcntl is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    except (OSError, ValueError):  # closed meanwhile
        return 0
