"""New connections in the order they are served: plain requests first, new sessions in turn.

The kernel queues new connections in one line, in arrival order (on Linux each with its
request in, see server.bind). When a herd of clients reconnects at once (a network blip,
a load balancer's restart) the line holds thousands of Socket.IO handshakes, each about
half a millisecond of work, and a `/healthz` behind them waited seconds (4 s behind 5,000).
Here the line is taken out of the kernel as fast as it comes, a batch at a time (an
accept and a look at the request line: microseconds each); each connection's first
line decides its place:
- a new Engine.IO session (a GET to the Socket.IO path without `sid=`) is held, and
  handed to the server in turn, at the server's pace (ACCEPT_BATCH per turn of the loop);
- anything else (a health check, the page, the API, an existing session's polling) is
  served at once, ahead of the held sessions.
New sessions are held as far as the connection cap leaves room for them (they count as
sessions for the descriptors the server plans for, server.fd_budget), and at most
HELD_LIMIT; past that a new one is answered at once with 503 and Retry-After, as at the
cap, so that what comes behind it in the kernel's line is still reached. The rest is
counted as connections waiting for their request (waiting.Waiting) from the moment it is
taken; at that limit nothing more is taken here, and the server accepts as before.

A connection can reach accept() before its request: when a burst of connections fills
the kernel's queue of half-open ones, Linux answers with SYN cookies, and TCP_DEFER_ACCEPT
no longer applies (5,000 at once on loopback: hundreds). Such a connection waits here
until its request line is in (looked at again at most every RECHECK seconds), for at
most EARLY_WAIT seconds; then it goes the plain way, where the request deadline applies
(waiting.Waiting).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque

from .refusals import RETRY_AFTER, refusal_bytes
from .waiting import unread_bytes

log = logging.getLogger(__name__)

HELD_LIMIT = 16384  # new sessions held at most (the connection cap's room is the usual bound)
TAKE_BATCH = 256  # connections taken from the kernel in a row (a few ms), while none is plain
PEEK = 1024  # bytes of a request looked at: a Socket.IO handshake's request line fits
RECHECK = 0.005  # seconds between looks at the connections whose request has not arrived
EARLY_WAIT = 1.0  # seconds such a connection waits here for its request line
PLAIN, SESSION = "plain", "session"
BUSY = refusal_bytes(503, "too many new connections at once; retry in a few seconds",
                     retry_after=RETRY_AFTER)


class Arrivals:
    """The connections accepted but not yet handed to the server, in serving order.

    `accept_nowait()` is the runtime's accept that never waits: (connection, address),
    or None when the kernel has none queued; it raises OSError as accept() does.
    `path` is the Socket.IO path ("/socket.io/"); `room()` the sessions the connection
    cap has room for; `waiting` the server's Waiting, if it has one (eventlet's);
    `refused()` is called for each new session turned away (the metrics' count).
    """

    def __init__(self, accept_nowait, path: str, room=lambda: HELD_LIMIT, waiting=None,
                 refused=lambda: None, limit: int = HELD_LIMIT, clock=time.monotonic) -> None:
        self.accept_nowait = accept_nowait
        self.handshake = b"GET " + path.encode()
        self.room = room
        self.waiting = waiting
        self.refused = refused
        self.limit = limit
        self.clock = clock
        self.plain: deque = deque()
        self.held: deque = deque()  # new sessions, oldest first
        self.early: deque = deque()  # (connection, address, accepted at): no request line yet
        self.checked = float("-inf")  # when `early` was last looked at
        self.held_total = 0  # new sessions that waited here
        self.turned_away = 0

    def __len__(self) -> int:
        return len(self.plain) + len(self.held) + len(self.early)

    def next(self):
        """The next connection to serve, or None if none is queued anywhere."""
        return self.next_plain() or self.next_held()

    def next_plain(self):
        """The next connection that is no new session, or None (new sessions stay held)."""
        if not self.plain:
            self.take()
        return self.plain.popleft() if self.plain else None

    def next_held(self):
        """The oldest new session, or None."""
        return self.held.popleft() if self.held else None

    def take(self) -> None:
        """Take what the kernel has queued, up to TAKE_BATCH in a row; sort what came early."""
        if self.early:
            self.sort_early()
        for _ in range(TAKE_BATCH):
            if self.waiting is not None and len(self.waiting) >= self.waiting.limit:
                # Past it, the server's accept() makes room (waiting.Waiting) one at a
                # time, as the closed ones' tasks let their descriptors go.
                return
            found = self.accept_nowait()
            if found is None:
                return
            kind = self.kind(found[0])
            if kind is None:
                self.early.append((*found, self.clock()))
                self.wait_for_request(found)
            else:
                self.place(found, kind)

    def sort_early(self) -> None:
        """Place the early connections whose request line is in now, or that waited enough."""
        now = self.clock()
        if now - self.checked < RECHECK:
            return
        self.checked = now
        for _ in range(len(self.early)):
            conn, address, since = self.early.popleft()
            kind = self.kind(conn)
            if kind is None and now - since < EARLY_WAIT:
                self.early.append((conn, address, since))
            else:
                self.place((conn, address), kind or PLAIN)

    def place(self, found, kind: str) -> None:
        if kind == PLAIN:
            self.plain.append(found)
            self.wait_for_request(found)
        elif len(self.held) < min(self.limit, self.room()):
            if self.waiting is not None:
                self.waiting.discard(found[0])  # counted as a session, not as waiting
            self.held.append(found)
            self.held_total += 1
        else:
            if self.waiting is not None:
                self.waiting.discard(found[0])
            self.turn_away(found[0])

    def wait_for_request(self, found) -> None:
        if self.waiting is not None:
            self.waiting.add(*found)  # the socket, and its address for the per-address cap

    def kind(self, conn) -> str | None:
        """SESSION if `conn`'s request line opens a new Engine.IO session, PLAIN if it does
        not, None if the line is not in yet."""
        size = unread_bytes(conn)
        if size <= 0:
            return None
        try:  # the bytes are there: this returns at once, and leaves them for the server
            head = conn.recv(min(size, PEEK), socket.MSG_PEEK)
        except OSError:
            return PLAIN
        line, found, _ = head.partition(b"\r\n")
        if not found:
            return None if size < PEEK else PLAIN
        return SESSION if line.startswith(self.handshake) and b"sid=" not in line else PLAIN

    def turn_away(self, conn) -> None:
        """503 to a new session past the limit: a fresh socket's buffer takes it at once."""
        if not self.turned_away:
            log.warning("more new connections wait their turn than the connection cap or %d "
                        "allow: answering new ones with 503 (logged once)", self.limit)
        self.turned_away += 1
        self.refused()
        try:
            conn.send(BUSY)
        except OSError:
            pass
        conn.close()

    def close(self) -> None:
        """Close what waits here (the server is stopping)."""
        for queue in (self.plain, self.held, self.early):
            while queue:
                try:
                    queue.popleft()[0].close()
                except OSError:
                    pass

