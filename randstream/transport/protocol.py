"""RFC 6455, the server's side, without I/O: bytes in, messages and bytes to send out.

A ServerProtocol is fed what a client sent (`receive_data`, `receive_eof`) and answers
with the messages it completed, in order, and the frames to write back (`data_to_send`):
pongs for pings and, once the connection ends, a close frame. Its `state` is OPEN, then
CLOSING once a close frame is decided (the client's echoed, or ours for a broken rule;
nothing more is read), then CLOSED when the client has closed its side. No socket, no
clock, no engine.io: the runtime's Connection (websocket.py) moves the bytes, and every
rule here is a unit test of bytes in, events out (tests/test_ws_protocol.py).

The rules are the ones a browser keeps without noticing: frames masked, no extensions
(the handshake refuses compression), control frames whole and short, a message in at
most MAX_FRAGMENTS pieces and `max_size` bytes (engine.io's max_http_buffer_size), text
in UTF-8, and WebSocket pings and pongs at most CONTROL_FRAME_RATE a second.
"""

from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# RFC 6455 close codes sent when a client breaks the protocol.
PROTOCOL_ERROR, INVALID_DATA, POLICY, TOO_BIG = 1002, 1007, 1008, 1009
MAX_FRAGMENTS = 64  # pieces of one message
# WebSocket pings and pongs a client may send: per second, and at once. Browsers send none.
CONTROL_FRAME_RATE, CONTROL_FRAME_BURST = 2.0, 20.0
CLOSE_FRAME = b"\x88\x00"  # a close frame without a status


class State(enum.Enum):
    OPEN = "open"  # messages flow
    CLOSING = "closing"  # our close frame is decided; what the client sends is ignored
    CLOSED = "closed"  # the client closed its side


OPEN, CLOSING, CLOSED = State.OPEN, State.CLOSING, State.CLOSED


def websocket_frame(text: str) -> bytes:
    """An unmasked, final, uncompressed RFC 6455 text frame (the server-to-client form)."""
    return _frame(0x80 | TEXT, text.encode())


def binary_frame(data: bytes) -> bytes:
    """The same, binary."""
    return _frame(0x80 | BINARY, data)


def close_frame(code: int | None = None) -> bytes:
    """A close frame with status `code`, or none."""
    return CLOSE_FRAME if code is None else _frame(0x80 | CLOSE, code.to_bytes(2, "big"))


def _frame(first_byte: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((first_byte, n))
    elif n < 65536:
        header = bytes((first_byte, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first_byte, 127)) + n.to_bytes(8, "big")
    return header + payload


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR a client frame's payload with its 4-byte mask, as one big-integer operation."""
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class ServerProtocol:
    """One client's WebSocket as the server sees it, from the handshake on.

    `close_code` is the status of our close frame (None: none, or not closing yet) and
    `closed_by_client` whether the client began the close with a close frame of its own
    (else it broke a rule, or close() was called).
    """

    __slots__ = ("state", "max_size", "unread", "fragments", "fragmented", "outgoing",
                 "tokens", "stamp", "close_code", "closed_by_client")

    def __init__(self, max_size: int) -> None:
        self.state = OPEN
        self.max_size = max_size
        self.unread = b""  # received bytes not yet a whole frame: a bytearray while any
        self.fragments: list[bytes] | None = None  # the pieces so far of a message in pieces
        self.fragmented = 0  # that message's opcode, while it arrives
        self.outgoing: list[bytes] = []
        self.tokens = CONTROL_FRAME_BURST  # the ping/pong bucket, filled at `stamp`
        self.stamp = 0.0
        self.close_code: int | None = None
        self.closed_by_client = False

    def receive_data(self, data: bytes, now: float) -> list[str | bytes]:
        """The messages `data` completes, in order: text as str, binary as bytes. `now`
        (seconds, monotonic) times WebSocket pings and pongs. What to answer: data_to_send()."""
        if self.state is not OPEN:
            return []
        unread = self.unread
        if unread:
            unread += data
            buf = unread
        else:  # the usual case: whole frames in one read, parsed where they are
            buf = data
        messages: list[str | bytes] = []
        pos = self._parse(buf, messages, now)
        if self.state is not OPEN:  # _end let go of the buffers
            return messages
        if buf is data:
            if pos < len(data):
                self.unread = bytearray(data[pos:])
        elif pos == len(buf):
            self.unread = b""
        else:
            del buf[:pos]  # once per read, not per frame
        return messages

    def receive_eof(self) -> None:
        """The client closed its side of the connection (if before a close frame, an
        abnormal closure: nothing is sent)."""
        self._let_go()
        self.outgoing = []
        self.state = CLOSED

    def data_to_send(self) -> list[bytes]:
        """The frames to write, in order; once the connection has ended, the close frame last."""
        frames, self.outgoing = self.outgoing, []
        return frames

    def close(self, code: int | None = None) -> bytes:
        """End the connection from this side: the close frame to write (with status
        `code`, if any); nothing more is read, and answers not yet taken with
        data_to_send() are dropped. b"" if it was ending already."""
        if self.state is not OPEN:
            return b""
        self._end(code)
        frames, self.outgoing = self.outgoing, []
        return frames[-1]

    # The reader: RFC 6455 frames, client to server.

    def _parse(self, buf, messages: list, now: float) -> int:
        """Take every whole frame from `buf`; where the rest begins."""
        pos, size, limit = 0, len(buf), self.max_size
        while size - pos >= 2 and self.state is OPEN:
            first, second = buf[pos], buf[pos + 1]
            fin, opcode, n = first & 0x80, first & 0x0F, second & 0x7F
            start = pos + 2
            if first & 0x70 or not second & 0x80 or (opcode >= 8 and (not fin or n > 125)):
                self._end(PROTOCOL_ERROR)  # extensions, unmasked, a control frame in pieces or long
                break
            if n == 126:
                start = pos + 4
                if size < start:
                    break
                n = int.from_bytes(buf[pos + 2:start], "big")
            elif n == 127:
                start = pos + 10
                if size < start:
                    break
                n = int.from_bytes(buf[pos + 2:start], "big")
            if n > limit:
                self._end(TOO_BIG)
                break
            end = start + 4 + n
            if size < end:
                break
            payload = unmask(buf[start + 4:end], buf[start:start + 4])
            pos = end
            if opcode >= 8:
                self._control(opcode, payload, now)
            elif opcode == CONTINUATION:
                if not self.fragmented:
                    self._end(PROTOCOL_ERROR)  # a continuation of nothing
                    break
                fragments = self.fragments
                fragments.append(payload)
                if len(fragments) > MAX_FRAGMENTS or sum(map(len, fragments)) > limit:
                    self._end(TOO_BIG)
                    break
                if fin:
                    self._message(self.fragmented, b"".join(fragments), messages)
                    self.fragments, self.fragmented = None, 0
            elif opcode <= BINARY:
                if self.fragmented:
                    self._end(PROTOCOL_ERROR)  # a new message inside another
                    break
                if fin:
                    self._message(opcode, payload, messages)
                else:
                    self.fragments, self.fragmented = [payload], opcode
            else:
                self._end(PROTOCOL_ERROR)  # a reserved opcode
        return pos

    def _message(self, opcode: int, payload: bytes, messages: list) -> None:
        if opcode == BINARY:
            messages.append(payload)
            return
        try:
            messages.append(payload.decode())
        except UnicodeDecodeError:
            self._end(INVALID_DATA)

    def _control(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == PING or opcode == PONG:
            if not self._control_allowed(now):
                if _first("control"):
                    log.warning("closed a WebSocket sending over %g pings/pongs a second "
                                "(further ones are not logged)", CONTROL_FRAME_RATE)
                self._end(POLICY)
            elif opcode == PING:  # the same payload back
                self.outgoing.append(_frame(0x80 | PONG, payload))
        elif opcode == CLOSE:  # answer with the same code, then end
            if len(payload) == 1 or (payload and not _valid_close(payload)):
                self._end(PROTOCOL_ERROR)
            else:
                self.closed_by_client = True
                self._end(int.from_bytes(payload[:2], "big") if payload else None)
        else:  # 0xB-0xF are reserved
            self._end(PROTOCOL_ERROR)

    def _control_allowed(self, now: float) -> bool:
        """A token bucket for WebSocket pings and pongs: each costs a write or a wake-up."""
        self.tokens = min(CONTROL_FRAME_BURST,
                          self.tokens + (now - self.stamp) * CONTROL_FRAME_RATE)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def _end(self, code: int | None) -> None:
        """Close with status `code` (None: none): the close frame goes last; nothing more is read."""
        if self.state is not OPEN:
            return
        self.state = CLOSING
        self.close_code = code
        self.outgoing.append(close_frame(code))
        self._let_go()

    def _let_go(self) -> None:
        self.unread = b""
        self.fragments, self.fragmented = None, 0


_logged: set[str] = set()


def _first(kind: str) -> bool:
    """Whether this is the first event of its kind in this process (one log line each)."""
    if kind in _logged:
        return False
    _logged.add(kind)
    return True


def _valid_close(payload: bytes) -> bool:
    """A close frame's status code and reason as RFC 6455 allows a client to send them."""
    code = int.from_bytes(payload[:2], "big")
    if not (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) and not 3000 <= code <= 4999:
        return False
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        return False
    return True
