"""Readings and their history: an in-memory ring for the hot path, backed by a store."""

from __future__ import annotations

import logging
import secrets
import threading
from bisect import bisect_right
from collections import deque
from typing import NamedTuple, Protocol

log = logging.getLogger(__name__)


class Reading(NamedTuple):
    seq: int
    value: int | float  # int for --source random
    ts: float  # server wall clock, epoch seconds, when drawn

    def to_dict(self) -> dict:
        return {"seq": self.seq, "value": self.value, "ts": self.ts}


class StoreError(Exception):
    """The store could not read or write; the live stream goes on without it."""


def new_stream_id() -> str:
    """A stream's identity: made once with its store, compared by clients as a string."""
    return secrets.token_hex(8)  # 16 hex digits: two stores never draw the same


class Store(Protocol):
    """Where readings and the stats state outlive the process (SQLite or Redis)."""

    stream_id: str  # whose readings these are: a swapped database is another stream
    def latest(self, n: int) -> list[Reading]: ...
    def after(self, seq: int, limit: int) -> list[Reading]: ...
    def last_seq(self) -> int: ...
    def append(self, reading: Reading, stats_state: dict) -> None: ...
    def stats_state(self) -> dict | None: ...
    def series(self, frm: float, to: float, points: int, interval: float) -> dict: ...
    def seq_span(self, frm: float, to: float) -> tuple[int, int] | None: ...
    def close(self) -> None: ...


class Ring:
    """The latest readings in seq order, bounded."""

    def __init__(self, size: int) -> None:
        self._items: deque[Reading] = deque(maxlen=size)
        self._lock = threading.Lock()  # only contended in threading mode

    def extend(self, readings: list[Reading]) -> None:
        with self._lock:
            for r in readings:
                if not self._items or r.seq > self._items[-1].seq:
                    self._items.append(r)

    def append(self, reading: Reading) -> None:
        self.extend([reading])

    def first_seq(self) -> int | None:
        return self._items[0].seq if self._items else None

    def last(self) -> Reading | None:
        return self._items[-1] if self._items else None

    def latest(self, n: int) -> list[Reading]:
        with self._lock:
            items = list(self._items)
        return items[-n:] if n > 0 else []

    def after(self, seq: int, limit: int) -> list[Reading]:
        with self._lock:
            items = list(self._items)
        start = bisect_right([r.seq for r in items], seq)
        return items[start:start + limit]


class History:
    """Recent readings from memory, older ones from the store."""

    def __init__(self, store: Store, ring_size: int) -> None:
        self.store = store
        self.ring = Ring(ring_size)
        self.store_error: str | None = None
        self.store_errors = 0
        self.ring.extend(store.latest(ring_size))
        self._last_seq = store.last_seq()
        # Fixed for the process's life: a client's `after` is a seq of this stream only.
        self.stream_id = store.stream_id

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def latest_reading(self) -> Reading | None:
        return self.ring.last()

    def follow(self, readings: list[Reading]) -> None:
        """Readings already stored by the stream's leader (scale-out): keep them, no write."""
        self.ring.extend(readings)
        if readings:
            self._last_seq = max(self._last_seq, readings[-1].seq)

    def append(self, reading: Reading, stats_state: dict) -> None:
        """Keep the reading; a failing store is reported, not fatal."""
        self._last_seq = reading.seq
        self.ring.append(reading)
        try:
            self.store.append(reading, stats_state)
        except StoreError as exc:
            self.store_errors += 1
            if self.store_error is None:
                log.warning("store failed, readings are kept in memory only: %s", exc)
            self.store_error = str(exc)
        else:
            if self.store_error is not None:
                log.info("store recovered")
            self.store_error = None

    def latest(self, n: int) -> list[Reading]:
        return self.ring.latest(n)

    def series(self, frm: float, to: float, points: int, interval: float) -> dict:
        """GET /api/series's answer, from the store's rollup tiers (StoreError if unreadable)."""
        return self.store.series(frm, to, points, interval)

    def seq_span(self, frm: float, to: float) -> tuple[int, int] | None:
        """The seqs that can hold readings with frm <= ts < to (None: no reading there)."""
        return self.store.seq_span(frm, to)

    def after(self, seq: int, limit: int) -> list[Reading]:
        """Readings with seq > `seq`, oldest first, at most `limit`."""
        first = self.ring.first_seq()
        if first is not None and seq >= first - 1:
            return self.ring.after(seq, limit)
        try:
            older = self.store.after(seq, limit)
        except StoreError as exc:
            log.warning("store read failed: %s", exc)
            older = []
        if len(older) < limit:
            newest = older[-1].seq if older else seq
            older += self.ring.after(newest, limit - len(older))
        return older
