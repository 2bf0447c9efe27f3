"""A polling session that upgrades to WebSocket ends like any WebSocket (issue 19, item 3).

Upgrades from polling go through engine.io's own WebSocket driver on every path (the direct
path serves only clients that open on WebSocket). Under gevent, engine.io's answer to the
upgrade request (an empty 200) used to follow the close frame into the WebSocket, and
Node's ws client read it as a broken frame ("RSV1 must be clear"); under threading the
connection stayed open after the close handshake until the client gave up. Spoken in raw
bytes here: after the close frame nothing, then the server's FIN.
"""

from __future__ import annotations

import base64
import json
import os
import socket

import pytest
from conftest import in_async_mode
from rawsocket import Polling
from test_protocol_abuse import masked

CLOSE, TEXT = 0x8, 0x1


@pytest.fixture(params=[("eventlet", "auto"), ("eventlet", "off"), ("gevent", "auto"),
                        ("gevent", "off"), ("threading", "auto")], ids="-".join)
def server_factory(server_factory, request):
    mode, fast_path = request.param
    start = in_async_mode(server_factory, mode)
    return lambda *args: start(*args, env={"RANDOM_STREAM_FAST_PATH": fast_path})


class Upgraded:
    """A polling session, joined, then upgraded over a raw socket: frames in, bytes counted."""

    def __init__(self, base_url: str, port: int) -> None:
        polling = Polling(base_url)
        polling.post(b"40")
        status, body = polling.poll()
        assert status == 200 and b'"history"' in body, body[:200]
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /socket.io/?EIO=4&transport=websocket&sid={polling.sid} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.send(TEXT, b"2probe")
        assert self.next_text() == "3probe"
        self.send(TEXT, b"5")

    def fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError(f"FIN before a close frame; unread {self.buffer[:200]!r}")
        self.buffer += chunk

    def send(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(masked(opcode, payload))

    def next_frame(self) -> tuple[int, bytes]:
        while True:
            if len(self.buffer) >= 2:
                first, n = self.buffer[0], self.buffer[1] & 0x7F
                assert first & 0x70 == 0 and self.buffer[1] & 0x80 == 0, \
                    f"not a server frame: {self.buffer[:200]!r}"
                start = 2
                if n == 126 and len(self.buffer) >= 4:
                    start, n = 4, int.from_bytes(self.buffer[2:4], "big")
                if n < 126 and len(self.buffer) >= start + n:
                    payload, self.buffer = self.buffer[start:start + n], self.buffer[start + n:]
                    return first & 0x0F, payload
            self.fill()

    def next_text(self) -> str:
        while True:
            opcode, payload = self.next_frame()
            assert opcode != CLOSE, f"closed early: {payload!r}"
            if opcode == TEXT and payload != b"6":  # engine.io's NOOP ends the poll
                return payload.decode()

    def until_close(self) -> bytes:
        """The payload of the server's close frame (readings and pings before it skipped)."""
        while True:
            opcode, payload = self.next_frame()
            if opcode == CLOSE:
                return payload

    def rest_until_fin(self, timeout: float = 10.0) -> bytes:
        """Whatever the server sends after its close frame, until its FIN."""
        self.sock.settimeout(timeout)
        rest = self.buffer
        while True:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(
                    f"no FIN within {timeout} s of the close handshake; after it: {rest[:300]!r}"
                ) from None
            if not chunk:
                return rest
            rest += chunk


def test_an_upgraded_websocket_ends_with_its_close_frame_and_then_its_fin(server_factory):
    server = server_factory("--interval", "0.2")
    for attempt in range(10):  # the close races the server's own end of the request
        for closer in ("client", "server"):
            ws = Upgraded(server.url, server.port)
            try:
                if attempt == 0:  # the stream flows over the upgraded connection
                    assert json.loads(ws.next_text().removeprefix("42"))[0] == "random_number"
                if closer == "client":
                    ws.send(CLOSE, (1000).to_bytes(2, "big"))
                    assert ws.until_close()[:2] == (1000).to_bytes(2, "big")
                else:
                    ws.send(TEXT, b"4x")  # an invalid packet: the server closes this connection
                    code = ws.until_close()
                    ws.send(CLOSE, code)  # the close handshake's answer, as a browser sends it
                rest = ws.rest_until_fin()
                assert rest == b"", f"{closer} closed; after the close frame: {rest[:300]!r}"
            finally:
                ws.sock.close()
    assert "Traceback" not in server.log()
