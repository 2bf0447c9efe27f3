"""RFC 6455 as the server reads it (randstream/transport/protocol.py): bytes in, messages and
frames to send out, no socket. What crosses a real wire (close handshakes, half-close,
linger, slow readers) is in test_direct.py."""

import logging

import pytest

from randstream.transport import protocol
from randstream.transport.protocol import (
    CLOSED,
    CLOSING,
    CONTROL_FRAME_BURST,
    CONTROL_FRAME_RATE,
    MAX_FRAGMENTS,
    OPEN,
    ServerProtocol,
    binary_frame,
    close_frame,
    unmask,
    websocket_frame,
)

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
MAX_SIZE = 64 * 1024  # engine.io's max_http_buffer_size in this app (randstream/stream.py)
T0 = 1000.0  # seconds on a monotonic clock


def masked(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
           mask: bytes = b"\x37\xfa\x21\x3d", length: int | None = None) -> bytes:
    """A client frame: masked, `length` (default the payload's) in the shortest form."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv | opcode
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 65536:
        header = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def unmasked(opcode: int, payload: bytes) -> bytes:
    return bytes((0x80 | opcode, len(payload))) + payload


def closing(code: int) -> bytes:
    return bytes((0x88, 2)) + code.to_bytes(2, "big")


def fed(*chunks: bytes, max_size: int = MAX_SIZE, now: float = T0):
    """A protocol fed `chunks` one read each: it, the messages and the frames to send."""
    p = ServerProtocol(max_size)
    messages = []
    for chunk in chunks:
        messages += p.receive_data(chunk, now)
    return p, messages, p.data_to_send()


def refused(data: bytes, code: int, **kwargs) -> ServerProtocol:
    """Assert that `data` closes the connection with `code` and hands on no message."""
    p, messages, sent = fed(data, **kwargs)
    assert (messages, sent) == ([], [closing(code)])
    assert p.state is CLOSING and p.close_code == code and not p.closed_by_client
    return p


# Messages -------------------------------------------------------------------------------------

def test_a_text_frame_is_a_str_and_a_binary_frame_bytes():
    p, messages, sent = fed(masked(TEXT, "42é".encode()), masked(BINARY, b"\x00\xff"))
    assert messages == ["42é", b"\x00\xff"]
    assert sent == [] and p.state is OPEN


def test_several_frames_in_one_read_come_out_in_order():
    p, messages, _ = fed(b"".join(masked(TEXT, str(i).encode()) for i in range(10)))
    assert messages == [str(i) for i in range(10)]
    assert p.unread == b""


def test_empty_messages_are_messages():
    assert fed(masked(TEXT), masked(BINARY))[1] == ["", b""]


def test_every_split_of_a_stream_gives_the_same_messages():
    stream = (masked(TEXT, b'42["resume",{"after":0}]') + masked(PING, b"p")
              + masked(BINARY, bytes(range(200))) + masked(TEXT, b"3"))
    expected = ['42["resume",{"after":0}]', bytes(range(200)), "3"]
    for cut in range(1, len(stream)):
        for second in (cut + 1, cut + 7, len(stream)):
            _, messages, sent = fed(stream[:cut], stream[cut:second], stream[second:])
            assert messages == expected, (cut, second)
            assert sent == [bytes((0x8A, 1)) + b"p"]


def test_a_message_in_fragments_fed_one_byte_at_a_time_is_put_together():
    message = b'42["resume",{"after":0}]'
    stream = masked(TEXT, message[:5], fin=False) + masked(CONTINUATION, message[5:12], fin=False) \
        + masked(CONTINUATION, message[12:])
    p = ServerProtocol(MAX_SIZE)
    got = []
    for i in range(len(stream)):
        got += p.receive_data(stream[i:i + 1], T0)
        if i < len(stream) - 1:
            assert got == []
    assert got == [message.decode()]
    assert p.unread == b"" and p.fragments is None and p.state is OPEN


def test_what_a_read_leaves_unfinished_waits_for_the_next():
    data = masked(TEXT, b"hello")
    p = ServerProtocol(MAX_SIZE)
    assert p.receive_data(data + data[:3], T0) == ["hello"]
    assert bytes(p.unread) == data[:3]
    assert p.receive_data(data[3:], T0) == ["hello"]
    assert p.unread == b""


# Lengths ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_7_16_and_64_bit_lengths(n):
    payload = bytes(i % 251 for i in range(n))
    data = masked(BINARY, payload)
    assert data[1] & 0x7F == (n if n < 126 else 126 if n < 65536 else 127)
    assert fed(data, max_size=100_000)[1] == [payload]
    # The extended length arriving in pieces.
    assert fed(data[:3], data[3:5], data[5:], max_size=100_000)[1] == [payload]


def test_a_message_of_the_size_limit_passes_and_one_byte_more_is_refused_on_its_header():
    assert fed(masked(BINARY, b"x" * MAX_SIZE))[1] == [b"x" * MAX_SIZE]
    # The header is enough: the payload is never waited for.
    refused(masked(BINARY, length=MAX_SIZE + 1)[:10], 1009)
    refused(masked(BINARY, length=100)[:2], 1009, max_size=99)  # a 7-bit length
    refused(masked(TEXT, length=2**40)[:10], 1009)
    refused(masked(BINARY, length=1000)[:4], 1009, max_size=999)  # a 16-bit length


def test_fragments_over_the_size_limit_in_total_are_refused():
    half = b"x" * (MAX_SIZE // 2)
    refused(masked(TEXT, half, fin=False) + masked(CONTINUATION, half, fin=False)
            + masked(CONTINUATION, b"x"), 1009)


def test_a_message_in_at_most_max_fragments_pieces():
    pieces = [masked(TEXT, b"4", fin=False)] + [masked(CONTINUATION, b"", fin=False)] * (
        MAX_FRAGMENTS - 2) + [masked(CONTINUATION, b"0")]
    assert fed(b"".join(pieces))[1] == ["40"]
    # A piece more, even empty: refused.
    assert fed(b"".join(pieces[:-1]) + masked(CONTINUATION, b"", fin=False))[0].state is OPEN
    refused(b"".join(pieces[:-1]) + masked(CONTINUATION, b"", fin=False) * 2, 1009)
    # Endless empty pieces: refused after a bounded number, not buffered.
    p = refused(masked(TEXT, b"4", fin=False) + masked(CONTINUATION, b"", fin=False) * 200, 1009)
    assert p.fragments is None


# Frames a client must not send ---------------------------------------------------------------

def test_an_unmasked_frame_is_a_protocol_error():
    refused(unmasked(TEXT, b"42[]"), 1002)


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
def test_reserved_bits_are_a_protocol_error(rsv):
    # RSV1 is permessage-deflate's, which the handshake refuses: no extension is on.
    refused(masked(TEXT, b"3", rsv=rsv), 1002)


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_are_a_protocol_error(opcode):
    refused(masked(opcode, b"x"), 1002)


def test_a_continuation_of_nothing_is_a_protocol_error():
    refused(masked(CONTINUATION, b"3"), 1002)
    p, messages, sent = fed(masked(TEXT, b"3") + masked(CONTINUATION, b"3"))  # that one had ended
    assert (messages, sent, p.close_code) == (["3"], [closing(1002)], 1002)


def test_a_new_message_inside_a_fragmented_one_is_a_protocol_error():
    refused(masked(TEXT, b"4", fin=False) + masked(TEXT, b"3"), 1002)
    refused(masked(BINARY, b"4", fin=False) + masked(BINARY, b"3", fin=False), 1002)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_a_fragmented_control_frame_is_a_protocol_error(opcode):
    refused(masked(opcode, b"x", fin=False), 1002)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_a_control_frame_over_125_bytes_is_a_protocol_error(opcode):
    refused(masked(opcode, b"x" * 126), 1002)
    refused(masked(opcode, length=126)[:4], 1002)  # on its header alone


def test_text_that_is_not_utf8_is_invalid_data():
    refused(masked(TEXT, b"\xff\xfe"), 1007)
    refused(masked(TEXT, b"4", fin=False) + masked(CONTINUATION, b"\xc3"), 1007)
    # Checked on the whole message: a character split across fragments is fine.
    assert fed(masked(TEXT, b"4\xc3", fin=False) + masked(CONTINUATION, b"\xa9"))[1] == ["4é"]
    assert fed(masked(BINARY, b"\xff\xfe"))[1] == [b"\xff\xfe"]  # binary is not text


# Control frames -------------------------------------------------------------------------------

def test_a_ping_is_answered_with_a_pong_of_the_same_payload():
    for payload in (b"", b"p1", bytes(range(125))):
        p, messages, sent = fed(masked(PING, payload))
        assert messages == [] and sent == [bytes((0x8A, len(payload))) + payload]
        assert p.state is OPEN


def test_a_pong_is_taken_quietly():
    p, messages, sent = fed(masked(PONG, b"unsolicited"))
    assert (messages, sent, p.state) == ([], [], OPEN)


def test_control_frames_between_fragments_are_answered_and_the_message_stays_whole():
    stream = masked(TEXT, b"42[", fin=False) + masked(PING, b"a") + masked(PONG) \
        + masked(CONTINUATION, b'"x"', fin=False) + masked(PING, b"b") + masked(CONTINUATION, b"]")
    for chunks in ([stream], [stream[i:i + 1] for i in range(len(stream))]):
        p, messages, sent = fed(*chunks)
        assert messages == ['42["x"]']
        assert sent == [b"\x8a\x01a", b"\x8a\x01b"]


def test_pings_and_pongs_are_rate_limited_per_connection(monkeypatch, caplog):
    monkeypatch.setattr(protocol, "_logged", set())
    burst = int(CONTROL_FRAME_BURST)
    p = ServerProtocol(MAX_SIZE)
    p.receive_data(masked(PING, b"x") * (burst // 2) + masked(PONG) * (burst - burst // 2), T0)
    assert len(p.data_to_send()) == burst // 2 and p.state is OPEN
    # Spent: the next one, at the same moment, closes with a policy violation.
    with caplog.at_level(logging.WARNING, logger=protocol.__name__):
        p.receive_data(masked(PING, b"y"), T0)
    assert p.data_to_send() == [closing(1008)] and p.close_code == 1008
    assert [r.getMessage() for r in caplog.records] == [
        f"closed a WebSocket sending over {CONTROL_FRAME_RATE:g} pings/pongs a second "
        "(further ones are not logged)"]
    # Another connection doing the same: closed too, and not logged again.
    caplog.clear()
    other = ServerProtocol(MAX_SIZE)
    with caplog.at_level(logging.WARNING, logger=protocol.__name__):
        other.receive_data(masked(PONG) * (burst + 1), T0)
    assert other.close_code == 1008 and caplog.records == []


def test_the_control_frame_allowance_refills_at_its_rate():
    burst = int(CONTROL_FRAME_BURST)
    p = ServerProtocol(MAX_SIZE)
    p.receive_data(masked(PING) * burst, T0)
    # One more each 1 / CONTROL_FRAME_RATE seconds, for as long as the client keeps to it.
    for i in range(1, 50):
        p.receive_data(masked(PING), T0 + i / CONTROL_FRAME_RATE)
    assert p.state is OPEN and len(p.data_to_send()) == burst + 49
    # Faster than that, even by a little: closed.
    p.receive_data(masked(PING), T0 + 49.9 / CONTROL_FRAME_RATE)
    assert p.state is CLOSING and p.close_code == 1008
    p = ServerProtocol(MAX_SIZE)
    p.receive_data(masked(PING) * burst, T0)
    # Never more than the burst saved up, however long the client was quiet.
    p.receive_data(masked(PING) * (burst + 1), T0 + 3600)
    assert p.data_to_send()[-1] == closing(1008)


def test_close_frames_do_not_count_against_the_allowance():
    p = ServerProtocol(MAX_SIZE)
    p.receive_data(masked(PING) * int(CONTROL_FRAME_BURST), T0)
    p.data_to_send()
    p.receive_data(masked(CLOSE, (1000).to_bytes(2, "big")), T0)
    assert p.data_to_send() == [closing(1000)] and p.closed_by_client


# The close handshake ----------------------------------------------------------------------------

@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 4000, 4999])
def test_a_close_frame_is_answered_with_the_same_code(code):
    p, messages, sent = fed(masked(CLOSE, code.to_bytes(2, "big") + "au revoir é".encode()))
    assert messages == [] and sent == [closing(code)]  # the code, without the reason
    assert p.state is CLOSING and p.closed_by_client and p.close_code == code


def test_a_close_frame_without_a_status_is_answered_without_one():
    p, _, sent = fed(masked(CLOSE))
    assert sent == [b"\x88\x00"] and p.closed_by_client and p.close_code is None


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_a_close_frame_with_an_invalid_code_is_a_protocol_error(code):
    refused(masked(CLOSE, code.to_bytes(2, "big")), 1002)


def test_a_close_frame_of_one_byte_is_a_protocol_error():
    refused(masked(CLOSE, b"\x03"), 1002)


def test_a_close_reason_that_is_not_utf8_is_a_protocol_error():
    refused(masked(CLOSE, (1000).to_bytes(2, "big") + b"\xff"), 1002)


# States -----------------------------------------------------------------------------------------

def test_nothing_is_taken_after_a_close_frame():
    after = masked(TEXT, b"3") + masked(PING, b"x") + masked(CLOSE, b"\x03")
    p, messages, sent = fed(masked(TEXT, b"40") + masked(CLOSE) + after, after, b"\x81")
    assert messages == ["40"]  # what came before it
    assert sent == [b"\x88\x00"]
    assert p.receive_data(after, T0) == [] and p.data_to_send() == []
    assert p.unread == b"" and p.fragments is None


def test_nothing_is_taken_after_a_broken_rule():
    stream = masked(TEXT, b"40") + masked(PING, b"1") + unmasked(TEXT, b"3") + masked(PING, b"2") \
        + masked(TEXT, b"41")
    p, messages, sent = fed(stream)
    assert messages == ["40"]
    assert sent == [b"\x8a\x011", closing(1002)]  # answers so far, then the close frame
    assert p.receive_data(masked(TEXT, b"3"), T0) == [] and p.data_to_send() == []


def test_a_half_received_message_is_let_go_at_the_close():
    p = ServerProtocol(MAX_SIZE)
    p.receive_data(masked(TEXT, b"x" * 1000, fin=False) + masked(CONTINUATION, b"y" * 100)[:50], T0)
    assert p.fragments and p.unread
    assert p.close() == b"\x88\x00"
    assert p.state is CLOSING and p.fragments is None and p.unread == b""


def test_open_closing_closed():
    p = ServerProtocol(MAX_SIZE)
    assert p.state is OPEN and p.close_code is None
    assert p.close(1001) == closing(1001)
    assert p.state is CLOSING and p.close_code == 1001 and not p.closed_by_client
    assert p.close() == b""  # once
    assert p.data_to_send() == []  # close() hands its frame over itself
    p.receive_eof()
    assert p.state is CLOSED
    assert p.receive_data(masked(TEXT, b"3"), T0) == [] and p.data_to_send() == []


def test_the_client_going_away_without_a_close_frame_is_closed_with_nothing_to_send():
    p = ServerProtocol(MAX_SIZE)
    p.receive_data(masked(TEXT, b"4", fin=False), T0)
    p.receive_eof()
    assert p.state is CLOSED and p.data_to_send() == [] and p.fragments is None
    assert p.close() == b""


def test_close_drops_answers_not_yet_taken():
    p = ServerProtocol(MAX_SIZE)
    p.receive_data(masked(PING, b"x"), T0)
    assert p.close(1002) == closing(1002)
    assert p.data_to_send() == []


def test_a_protocol_costs_no_buffer_while_nothing_is_half_received():
    p = ServerProtocol(MAX_SIZE)
    assert (p.unread, p.fragments, p.outgoing) == (b"", None, [])
    assert not hasattr(p, "__dict__")


# Frames the server sends ----------------------------------------------------------------------

@pytest.mark.parametrize("n, header", [(0, b"\x81\x00"), (125, b"\x81\x7d"),
                                        (126, b"\x81\x7e\x00\x7e"), (65535, b"\x81\x7e\xff\xff"),
                                        (65536, b"\x81\x7f" + (65536).to_bytes(8, "big"))])
def test_server_frames_are_unmasked_final_and_shortest(n, header):
    assert websocket_frame("x" * n) == header + b"x" * n
    assert binary_frame(b"x" * n) == bytes((0x82,)) + header[1:] + b"x" * n


def test_close_frames():
    assert close_frame() == b"\x88\x00"
    assert close_frame(1009) == b"\x88\x02\x03\xf1"


@pytest.mark.parametrize("n", range(10))
def test_unmask_is_the_xor_of_the_repeated_mask(n):
    payload, mask = bytes(range(100, 100 + n)), b"\x01\x80\xff\x10"
    assert unmask(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
