"""A herd of reconnects against a real server (issue 19): /healthz is not queued behind the
herd's handshakes or behind the burst of disconnects when it drops, and a closed
connection's memory goes when it closes, not at the next full garbage collection.

Each test counts (what was answered in which order, what was still waiting, what is
left in memory), never time: timing figures are bench/abuse.py's (`herd`).
"""

import base64
import json
import os
import selectors
import signal
import socket
import struct
import time

import pytest
from conftest import DIRECT_RUNTIMES, ROOT, in_async_mode

LINGER_RESET = struct.pack("ii", 1, 0)  # close() sends a TCP reset: a dropped network
HANDSHAKE = (b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
             b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
             b"Sec-WebSocket-Key: " + base64.b64encode(b"k" * 16) + b"\r\n\r\n")
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.fixture(params=DIRECT_RUNTIMES)
def server_factory(server_factory, request):
    return in_async_mode(server_factory, request.param)


def masked(text: str) -> bytes:
    """A client's text frame (masked, as RFC 6455 wants; the mask is zero)."""
    payload = text.encode()
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def join(port: int) -> socket.socket:
    """A WebSocket client that has joined the namespace (its snapshot left unread)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(HANDSHAKE)
    seen = b""
    while b'0{"sid"' not in seen:  # the 101, then engine.io's OPEN packet
        seen += sock.recv(4096)
    sock.sendall(masked("40"))
    return sock


def drop(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    sock.close()


def healthz(port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(HEALTHZ)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def wait_for_clients(port: int, count: int) -> None:
    deadline = time.monotonic() + 60
    while healthz(port)["clients"] != count:
        assert time.monotonic() < deadline, f"never {count} clients"
        time.sleep(0.1)


def test_healthz_is_answered_ahead_of_a_herds_handshakes(server_factory):
    """Fails on the old code: the kernel queues new connections in one line and the
    server took them in that order, a handshake being ~0.5 ms of work: a /healthz behind
    5,000 reconnecting clients waited 4 s. Here 800 handshakes arrive at once, then a
    /healthz: it is answered before most of them."""
    herd = 800
    server = server_factory("--max-per-address", "2000")
    port = server.port
    # Connected first, silent: the kernel holds them until their requests come
    # (TCP_DEFER_ACCEPT), so that the server sees the whole herd at once.
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(herd)]
    probe = socket.create_connection(("127.0.0.1", port), timeout=10)
    selector = selectors.DefaultSelector()
    try:
        # Stopped while the herd and the probe send: the server sees them all at once, as
        # it does a real herd, not as fast as this test (on a busy machine, slowly) writes.
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            for sock in socks:
                sock.sendall(HANDSHAKE)
            probe.sendall(HEALTHZ)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        for sock in socks + [probe]:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        answered: list[socket.socket] = []  # in the order their first bytes came
        deadline = time.monotonic() + 60
        while probe not in answered:
            assert time.monotonic() < deadline, "the /healthz was never answered"
            for key, _ in selector.select(1):
                answered.append(key.fileobj)
                selector.unregister(key.fileobj)
        before = answered.index(probe)
        assert before < herd // 4, f"/healthz waited behind {before} of {herd} handshakes"
    finally:
        selector.close()
        for sock in socks + [probe]:
            sock.close()


@pytest.mark.fast_path
def test_a_burst_of_disconnects_does_not_hold_healthz_up(server_factory):
    """Fails on the old code: each ended WebSocket started its disconnect handler in a
    task of its own at once, and the thousands a herd's drop ends all ran in the next
    turn of the loop (~0.2 ms each: a second at 5,000), /healthz behind them. Now they
    start a batch a turn: a /healthz right after 2,000 clients dropped is answered while
    many of their disconnects still wait their turn (on the old code: few or none)."""
    count = 2000
    server = server_factory("--max-per-address", "3000")
    port = server.port
    clients = [join(port) for _ in range(count)]
    wait_for_clients(port, count)
    for sock in clients:
        drop(sock)
    time.sleep(0.05)  # the server reads the resets: the burst has begun
    still = healthz(port)["clients"]
    assert still > count // 4, f"/healthz was answered after {count - still} of {count} disconnects"
    wait_for_clients(port, 0)  # and every one is handled in its turn


@pytest.mark.fast_path
def test_a_closed_connection_goes_without_a_garbage_collection(server_factory, tmp_path):
    """Fails on the old code: every Socket.IO event left a reference cycle (Flask keeps
    the NotFound of the Socket.IO path in the request context, and its traceback the
    frames of the call, often up to the connection), which only the full collection
    every 60 s freed: 100 request contexts for these 40 clients; and a closed connection
    kept its socket objects while anything held its session, as engine.io's service task
    does for up to a ping timeout: 20 sockets here. After a herd the old connections and
    their replacements filled memory together (RSS +12-16% over three herds)."""
    report = tmp_path / "memory.json"
    server = server_factory("--max-per-address", "200",
                            launcher=[str(ROOT / "tests" / "memory_probe.py"), str(report)])
    port, pid = server.port, server.proc.pid
    held = [join(port) for _ in range(20)]  # their sessions copied, as engine.io's task does
    wait_for_clients(port, len(held))
    os.kill(pid, signal.SIGUSR2)
    time.sleep(0.5)
    free = [join(port) for _ in range(20)]  # referred to by nothing once closed
    clients = held + free
    wait_for_clients(port, len(clients))
    for sock in clients[::2]:  # resume too: every handler (connect, resume, disconnect) runs
        sock.sendall(masked('42["resume",{"after":0}]'))
    for sock in clients[::2]:
        sock.close()  # a close without a goodbye: FIN
    for sock in clients[1::2]:
        drop(sock)  # a dropped network: reset
    wait_for_clients(port, 0)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 20
    while not report.exists():
        assert time.monotonic() < deadline, "no report from the probe"
        time.sleep(0.1)
    found = json.loads(report.read_text())
    assert found["copied_sessions"] == len(held)
    cycles = {k: v for k, v in found.items() if k.endswith("_in_cycles")}
    assert not any(cycles.values()), f"left in reference cycles: {cycles}"
    assert found["closed_sockets_held"] == 0, found


def test_arrivals_serve_plain_requests_first_hold_new_sessions_and_turn_away_past_the_cap():
    """arrivals.py on a real listening socket: the order it serves connections in."""
    from randstream.arrivals import Arrivals
    from randstream.server import Waiting

    def polling(query: str) -> bytes:
        return f"GET /socket.io/?EIO=4&transport=polling{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)

        def accept_nowait():
            try:
                conn, address = listener.accept()
            except BlockingIOError:
                return None
            return conn, address

        sent = [HANDSHAKE, polling(""), HEALTHZ, polling("&sid=abc"), HANDSHAKE, None]
        peers = []
        for request in sent:
            peer = socket.create_connection(listener.getsockname())
            if request is not None:  # the last one says nothing yet
                peer.sendall(request)
            peers.append(peer)
        time.sleep(0.2)
        refused = []
        waiting = Waiting(limit=16)
        arrivals = Arrivals(accept_nowait, "/socket.io/", room=lambda: 2, waiting=waiting,
                            refused=lambda: refused.append(1))
        served = []
        while (found := arrivals.next()) is not None:
            served.append(found[0].recv(4096, socket.MSG_PEEK))
            found[0].close()
        assert served == [HEALTHZ, polling("&sid=abc"), HANDSHAKE, polling("")], \
            "plain requests first, then new sessions in turn, as far as the cap has room"
        assert refused == [1] and peers[4].recv(64).startswith(b"HTTP/1.1 503 "), "past it, a 503"
        assert len(arrivals.early) == 1 and arrivals.early[0][0] in waiting.sockets, \
            "the silent one waits for its request, counted as waiting"
        peers[5].sendall(HEALTHZ)
        time.sleep(0.1)
        arrivals.checked = float("-inf")  # look again now
        assert arrivals.next()[0].recv(4096, socket.MSG_PEEK) == HEALTHZ
        arrivals.close()
        for peer in peers:
            peer.close()
