"""The fast path's client manager indexes each client's rooms (randstream/transport RoomIndex).

A client's disconnect visits its own rooms, not every room of the namespace (one per
client), and the rooms stay what python-socketio's own bookkeeping makes of them: after
every step below, each client's rooms as the index has them are the rooms a full scan
finds (python-socketio's own get_rooms), and no trace of a disconnected client is left.
Real python-socketio servers and clients (threading mode, Werkzeug's HTTP server,
WebSocket clients).
"""

from __future__ import annotations

import threading
import time

import pytest
import socketio
from bidict import ValueDuplicationError
from conftest import free_port
from socketio.base_manager import BaseManager
from werkzeug.serving import WSGIRequestHandler, make_server

from randstream.transport.engineio import FastManager
from randstream.transport.points import code_names

pytestmark = pytest.mark.fast_path


def scanned_rooms(manager, sid: str, namespace: str = "/") -> set:
    """A client's rooms as python-socketio finds them: every room of the namespace tested."""
    return set(BaseManager.get_rooms(manager, sid, namespace))


def assert_consistent(manager) -> None:
    """The index and the rooms agree, for every client in every namespace."""
    for namespace, rooms in manager.rooms.items():
        assert all(rooms.values()), "an empty room is left behind"
        for sid in rooms.get(None, {}):
            found = scanned_rooms(manager, sid, namespace)
            assert set(manager.get_rooms(sid, namespace)) == found
            assert manager.entered.get((namespace, sid), set()) == found - {sid}
    for (namespace, sid), rooms in manager.entered.items():
        assert rooms and all(sid in manager.rooms[namespace][room] for room in rooms)


def assert_gone(manager, sid: str, namespace: str = "/") -> None:
    assert (namespace, sid) not in manager.entered
    assert not any(sid in members for members in manager.rooms.get(namespace, {}).values())
    assert sid not in manager.pending_disconnect.get(namespace, [])
    assert sid not in manager.callbacks


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the server did not get there in time"
        time.sleep(0.02)


class QuietHandler(WSGIRequestHandler):
    def log(self, *args) -> None:  # not a line per request, nor Werkzeug's parse of the
        pass  # bytes that follow a WebSocket it handed over


class RoomServer:
    """A python-socketio server whose clients enter, leave and close rooms by events."""

    def __init__(self, manager) -> None:
        self.sio = sio = socketio.Server(async_mode="threading", client_manager=manager)
        self.manager = manager
        sio.on("join", lambda sid, room: sio.enter_room(sid, room) or sorted(sio.rooms(sid)))
        sio.on("leave", lambda sid, room: sio.leave_room(sid, room) or sorted(sio.rooms(sid)))
        sio.on("close", lambda sid, room: sio.close_room(room))
        self.http = make_server("127.0.0.1", free_port(), socketio.WSGIApp(sio), threaded=True,
                                request_handler=QuietHandler)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()
        self.clients: list[socketio.Client] = []

    def client(self) -> tuple[socketio.Client, str]:
        """A connected client and its sid on the server."""
        client = socketio.Client(reconnection=False)
        client.connect(self.url, transports=["websocket"], wait_timeout=10)
        self.clients.append(client)
        wait_until(lambda: self.manager.is_connected(client.get_sid(), "/"))
        return client, client.get_sid()

    def hang_up(self, client: socketio.Client) -> None:
        """The client's own disconnect, without waiting out its close handshake: the
        server takes the disconnect at once, the client then waits 3 s for an answer to
        its close frame. (Over long-polling its disconnect sometimes never arrived.)"""
        threading.Thread(target=client.disconnect, daemon=True).start()

    def close(self) -> None:
        for client in self.clients:
            client.disconnect()
        self.http.shutdown()
        self.thread.join(10)


@pytest.fixture
def manager():
    return FastManager()


@pytest.fixture
def room_server(manager):
    server = RoomServer(manager)
    yield server
    server.close()


def test_rooms_and_the_index_agree_through_a_clients_life(room_server):
    manager = room_server.manager
    a, sid_a = room_server.client()
    b, sid_b = room_server.client()
    c, sid_c = room_server.client()
    assert_consistent(manager)
    assert manager.get_rooms(sid_a, "/") == [sid_a] and manager.entered == {}

    assert a.call("join", "red") == sorted([sid_a, "red"])
    a.call("join", "blue")
    a.call("join", "blue")  # twice: still once in it
    b.call("join", "red")
    c.call("join", "green")
    assert_consistent(manager)
    assert manager.entered[("/", sid_a)] == {"red", "blue"}
    assert set(manager.get_rooms(sid_a, "/")) == {sid_a, "red", "blue"}

    assert a.call("leave", "blue") == sorted([sid_a, "red"])
    assert "blue" not in manager.rooms["/"]  # its last member left
    a.call("leave", "yellow")  # a room it is not in
    assert_consistent(manager)

    b.call("close", "red")  # closes it for a too
    assert "red" not in manager.rooms["/"]
    assert ("/", sid_a) not in manager.entered and ("/", sid_b) not in manager.entered
    assert_consistent(manager)

    a.call("join", "red")
    b.call("join", "red")
    a.call("leave", sid_a)  # even its own room
    assert manager.get_rooms(sid_a, "/") == ["red"]
    assert_consistent(manager)

    room_server.hang_up(a)  # a client in an extra room, without its own
    wait_until(lambda: sid_a not in manager.rooms["/"][None])
    assert_gone(manager, sid_a)
    assert set(manager.rooms["/"]["red"]) == {sid_b}  # the others stay
    assert_consistent(manager)

    room_server.sio.disconnect(sid_c)  # the server's disconnect, of a client in "green"
    wait_until(lambda: sid_c not in manager.rooms["/"][None])
    assert_gone(manager, sid_c)
    assert "green" not in manager.rooms["/"] and sid_c not in manager.rooms["/"]
    assert_consistent(manager)

    room_server.hang_up(b)
    wait_until(lambda: "/" not in manager.rooms)  # the last client took the namespace along
    assert manager.entered == {}


# Deterministic: no network, the manager of a real Server driven as a join drives it ------

class ScanCountingRooms(dict):
    """A namespace's rooms that count every walk over all of them."""

    walks = 0

    def copy(self):
        ScanCountingRooms.walks += 1
        return dict.copy(self)

    def items(self):
        ScanCountingRooms.walks += 1
        return dict.items(self)

    def keys(self):
        ScanCountingRooms.walks += 1
        return dict.keys(self)

    def values(self):
        ScanCountingRooms.walks += 1
        return dict.values(self)

    def __iter__(self):
        ScanCountingRooms.walks += 1
        return dict.__iter__(self)


def registered(manager, clients: int) -> list[str]:
    """`clients` sids registered on a real Server's manager as a join registers them."""
    socketio.Server(async_mode="threading", client_manager=manager)
    return [manager.connect(f"eio-{i}", "/") for i in range(clients)]


def test_a_disconnect_does_not_walk_every_room():
    """Fails on the old code: python-socketio's basic_disconnect copies the namespace's
    rooms (one per client) and tests the sid in each."""
    manager = FastManager()
    sids = registered(manager, 50)
    manager.enter_room(sids[0], "/", "extra")
    manager.enter_room(sids[1], "/", "extra")
    manager.rooms["/"] = ScanCountingRooms(manager.rooms["/"])
    ScanCountingRooms.walks = 0

    manager.disconnect(sids[0], "/")
    assert manager.get_rooms(sids[1], "/") == [sids[1], "extra"]
    assert ScanCountingRooms.walks == 0
    assert_gone(manager, sids[0])
    assert set(manager.rooms["/"]["extra"]) == {sids[1]}
    assert len(manager.rooms["/"]) == 1 + 49 + 1  # None, the 49 own rooms, "extra"


def test_the_counter_sees_the_librarys_own_scan():
    """The same disconnect through python-socketio's own Manager walks the rooms."""
    manager = socketio.Manager()
    sids = registered(manager, 50)
    manager.rooms["/"] = ScanCountingRooms(manager.rooms["/"])
    ScanCountingRooms.walks = 0
    manager.disconnect(sids[0], "/")
    assert ScanCountingRooms.walks >= 1


def test_a_second_join_of_one_session_changes_nothing():
    """pre_connect relies on basic_enter_room raising for a session already connected:
    the index is kept only after the library's call succeeded."""
    manager = FastManager()
    (sid,) = registered(manager, 1)
    manager.enter_room(sid, "/", "extra")
    before = {room: dict(members) for room, members in manager.rooms["/"].items()}
    assert manager.connect("eio-0", "/") is None
    with pytest.raises(ValueDuplicationError):
        manager.enter_room("another-sid", "/", None, eio_sid="eio-0")
    assert {room: dict(members) for room, members in manager.rooms["/"].items()} == before
    assert manager.entered == {("/", sid): {"extra"}}
    other = manager.connect("eio-other", "/")
    if "is_sid_room" in code_names(socketio.Manager.basic_enter_room):
        # python-socketio 5.17+: a sid room cannot be entered by another client
        with pytest.raises(ValueError):
            manager.enter_room(sid, "/", other)
        assert manager.entered == {("/", sid): {"extra"}}
    else:  # 5.16 (the lower bound) lets it in: the index records what the library did
        manager.enter_room(sid, "/", other)
        assert manager.entered == {("/", sid): {"extra", other}}
    assert_consistent(manager)


def test_namespaces_are_kept_apart():
    manager = FastManager()
    (sid,) = registered(manager, 1)
    other = manager.connect("eio-0", "/chat")
    manager.enter_room(sid, "/", "room")
    manager.enter_room(other, "/chat", "room")
    manager.disconnect(sid, "/")
    assert "/" not in manager.rooms
    assert manager.entered == {("/chat", other): {"room"}}
    assert manager.get_rooms(other, "/chat") == [other, "room"]
    assert manager.get_rooms(other, "/") == [] and manager.get_rooms("unknown", "/chat") == []
    assert_consistent(manager)
