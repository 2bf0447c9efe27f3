"""Bare Engine.IO v4 / Socket.IO v5 clients that send exactly the frames a test gives them.

python-socketio's client cannot send broken packets, and over WebSocket it duplicates an
Origin header passed to it; these speak the protocol by hand over websocket-client and
urllib, the way a hostile or broken client would.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import websocket

CLOSED = object()  # what recv() returns once the server has closed the connection


class RawSocket:
    """One WebSocket connection to /socket.io/, opened (Engine.IO OPEN read) but not joined."""

    def __init__(self, base_url: str, origin: str | None = None, timeout: float = 5.0) -> None:
        url = base_url.replace("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
        options = {"origin": origin} if origin else {"suppress_origin": True}
        self.ws = websocket.create_connection(url, timeout=timeout, **options)
        opened = self.ws.recv()
        assert opened.startswith("0"), opened
        self.open = json.loads(opened[1:])
        self.events: list[tuple[str, object]] = []

    def send(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            self.ws.send_binary(frame)
        else:
            self.ws.send(frame)

    def join(self) -> dict:
        """Send the namespace CONNECT; returns the `history` snapshot that follows it."""
        self.send("40")
        return self.wait_event("history")

    def recv(self, timeout: float = 5.0):
        """The next Socket.IO packet (pings answered), CLOSED, or None on timeout.

        A frame that is not WebSocket (say, an HTTP response written into the stream)
        raises, which is what the tests are looking for.
        """
        self.ws.settimeout(timeout)
        while True:
            try:
                opcode, data = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                return None
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                return CLOSED
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return CLOSED
            if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                continue
            text = data.decode()
            if text == "2":
                self.send("3")
                continue
            if text == "1":  # Engine.IO CLOSE
                return CLOSED
            if text.startswith("42"):
                name, *args = json.loads(text[2:])
                self.events.append((name, args[0] if args else None))
            return text

    def wait_event(self, name: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.recv(deadline - time.monotonic())
            if got is CLOSED:
                raise AssertionError(f"closed while waiting for {name!r}")
            if got is not None and got.startswith("42") and self.events[-1][0] == name:
                return self.events[-1][1]
        raise AssertionError(f"no {name!r} within {timeout}s; got {self.events[-5:]}")

    def wait_closed(self, timeout: float = 15.0) -> bool:
        """Read until the server closes the connection; False if it is still open."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.recv(deadline - time.monotonic()) is CLOSED:
                return True
        return False

    def leftover_bytes(self) -> bytes:
        """Whatever the server wrote after its close: must be nothing (no HTTP 500 after it)."""
        sock = self.ws.sock
        if sock is None:
            return b""
        sock.settimeout(1.0)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (TimeoutError, OSError):
            pass
        return data

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """Status, headers (lower-case names) and body of one request, errors included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, head, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, head, raw = exc.code, exc.headers, exc.read()
    return status, {k.lower(): v for k, v in head.items()}, raw


class Polling:
    """One long-polling Engine.IO session, by hand."""

    def __init__(self, base_url: str, origin: str | None = None) -> None:
        self.base = base_url + "/socket.io/?EIO=4&transport=polling"
        headers = {"Origin": origin} if origin else {}
        self.status, self.headers, body = http("GET", self.base, headers=headers)
        self.sid = json.loads(body[1:])["sid"] if self.status == 200 else None

    @property
    def url(self) -> str:
        return f"{self.base}&sid={self.sid}"

    def post(self, body: bytes) -> tuple[int, dict, bytes]:
        return http("POST", self.url, body, {"Content-Type": "text/plain;charset=UTF-8"})

    def poll(self, timeout: float = 10.0) -> tuple[int, bytes]:
        status, _, body = http("GET", self.url, timeout=timeout)
        return status, body
