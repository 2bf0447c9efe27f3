"""HTTP refusals the server writes itself, before any application sees the request."""

from __future__ import annotations

import json
from http import HTTPStatus

from .headers import SECURITY_HEADERS

RETRY_AFTER = 5  # seconds, sent with every 503 and 429 (the connection cap, per address, busy)


def refusal_bytes(code: int, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 error response: JSON body, security headers, connection closed."""
    body = json.dumps({"error": message}).encode()
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Error"
    head = [f"HTTP/1.1 {code} {phrase}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close"]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    head += [f"{name}: {value}" for name, value in SECURITY_HEADERS.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def bad_framing(headers) -> str | None:
    """Why a request's length headers are ambiguous (a request smuggling vector), or None."""
    lengths = headers.get_all("Content-Length") or []
    if any(not v.strip().isdigit() for v in lengths):
        return "Content-Length must be a whole number"
    if len({v.strip() for v in lengths}) > 1:
        return "two different Content-Length headers"
    if lengths and headers.get("Transfer-Encoding") is not None:
        return "Content-Length and Transfer-Encoding together"
    return None


class CutShort(Exception):
    """A request's headers ended with its connection (HeaderLines)."""


class HeaderLines:
    """A request's reader while its headers are parsed: the standard library's
    parse_headers, which eventlet and gevent use, reads lines until a blank one or the end
    of the stream, and then parses what it has. At the end of the stream this raises
    CutShort instead: nobody would read an answer (the client is gone, or its socket was
    shut to make room), and the parse would be wasted work, a few thousand times over when
    an attacker's connections are closed to make room."""

    __slots__ = ("stream",)

    def __init__(self, stream) -> None:
        self.stream = stream

    def readline(self, size=-1):
        line = self.stream.readline(size)
        if not line:
            raise CutShort
        return line
