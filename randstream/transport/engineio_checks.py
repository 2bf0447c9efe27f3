"""What the fast path and the limits (hooks.py) need of engine.io and python-socketio, checked at start.

Each check looks at the installed library: the attribute is there, and the library's own
code still uses it the way randstream/transport/engineio.py relies on.
"""

from __future__ import annotations

import inspect

from .points import ExtensionPoint, code_names


def extension_points(async_mode: str) -> tuple[list[ExtensionPoint], list[ExtensionPoint]]:
    """(required, fast): what the limits cannot do without, and what the fast path uses."""
    import engineio
    import socketio
    from engineio import socket as eio_socket_module

    Socket = eio_socket_module.Socket
    probes: dict = {}

    def server():  # one throwaway python-socketio server, as the app's is built
        if "server" not in probes:
            probes["server"] = socketio.Server(async_mode=async_mode)
        return probes["server"]

    def handlers():
        table = server().eio.handlers
        if not isinstance(table, dict) or not all(
                callable(table.get(e)) for e in ("connect", "message", "disconnect")):
            return "Server.handlers is not the table python-socketio registers its handlers in"
        if "handlers" not in code_names(engineio.Server._trigger_event):
            return "Server._trigger_event no longer reads Server.handlers"
        return None

    def websocket_driver():
        drivers = getattr(server().eio, "_async", None)
        if not isinstance(drivers, dict) or not isinstance(drivers.get("websocket"), type):
            return "Server._async['websocket'] is not a driver class"
        if "_async" not in code_names(Socket._upgrade_websocket):
            return "Socket._upgrade_websocket no longer takes its driver from Server._async"
        return None

    def event_handlers():
        table = server().handlers
        if not isinstance(table, dict):
            return "socketio Server.handlers is not a table of namespaces"
        if "handlers" not in code_names(socketio.Server._get_event_handler):
            return "socketio Server._get_event_handler no longer reads Server.handlers"
        return None

    def sockets():
        if not isinstance(server().eio.sockets, dict):
            return "Server.sockets is not a table of sessions"
        if not {"wait", "abort", "reason"} <= set(inspect.signature(Socket.close).parameters):
            return "Socket.close no longer takes wait, abort and reason"
        return None

    def send_eio_packet():
        method = getattr(socketio.Server, "_send_eio_packet", None)
        if method is None or len(inspect.signature(method).parameters) != 3:
            return "Server._send_eio_packet(eio_sid, pkt) is gone"
        if "_send_eio_packet" not in code_names(socketio.Manager.emit):
            return "Manager.emit no longer sends through Server._send_eio_packet"
        return None

    def pings():
        probe = Socket(server().eio, "probe")
        if not isinstance(probe.last_ping, (int, float)) or not callable(probe.schedule_ping):
            return "Socket.last_ping / schedule_ping changed"
        if "schedule_ping" not in code_names(engineio.Server._handle_connect):
            return "Server._handle_connect no longer calls the socket's schedule_ping"
        if "last_ping" not in code_names(Socket.schedule_ping):
            return "Socket.schedule_ping no longer reads last_ping"
        return None

    def websocket_handler():
        if not callable(getattr(Socket, "_websocket_handler", None)):
            return "Socket._websocket_handler is gone"
        if "_websocket_handler" not in code_names(Socket._upgrade_websocket):
            return "Socket._upgrade_websocket no longer looks up _websocket_handler"
        queue = Socket(server().eio, "probe").queue
        if not all(callable(getattr(queue, m, None)) for m in ("put", "qsize", "join")):
            return "Socket.queue is not a queue"
        return None

    def room_bookkeeping():
        # RoomIndex (engineio.py) keeps its index through enter and leave, and does what
        # basic_disconnect does without the scan: they may touch no more than it knows.
        known = {
            "basic_enter_room": {"rooms", "is_sid_room", "bidict", "ValueError"},
            "basic_leave_room": {"rooms", "len", "KeyError"},
            "basic_close_room": {"is_sid_room", "get_participants", "basic_leave_room",
                                 "ValueError", "KeyError"},
            "basic_disconnect": {"rooms", "copy", "items", "append", "basic_leave_room",
                                 "callbacks", "pending_connect", "pending_disconnect",
                                 "remove", "len"},
        }
        signatures = {"basic_enter_room": ["self", "sid", "namespace", "room", "eio_sid"],
                      "basic_leave_room": ["self", "sid", "namespace", "room"],
                      "basic_disconnect": ["self", "sid", "namespace", "kwargs"]}
        for name, names in known.items():
            method = getattr(socketio.Manager, name)
            new = {n for n in code_names(method) if n.isidentifier()} - names  # not messages
            if new:
                return f"Manager.{name} now also uses {', '.join(sorted(new))}"
            wanted = signatures.get(name)
            if wanted and list(inspect.signature(method).parameters) != wanted:
                return f"Manager.{name} takes other arguments"
        if "basic_leave_room" not in code_names(socketio.Manager.basic_close_room):
            return "Manager.basic_close_room no longer leaves through basic_leave_room"
        for name in ("enter_room", "leave_room", "close_room", "disconnect"):
            if f"basic_{name}" not in code_names(getattr(socketio.Manager, name)):
                return f"Manager.{name} no longer goes through basic_{name}"
        return None

    def public_names():
        # Public but undocumented names hooks.py and live.py use on either path.
        srv = server()
        if not callable(getattr(srv, "packet_class", None)):
            return "Server.packet_class is gone (hooks.py decodes events with it)"
        if not callable(getattr(srv.manager, "sid_from_eio_sid", None)) or not callable(
                getattr(srv.manager, "eio_sid_from_sid", None)):
            return "Manager.sid_from_eio_sid / eio_sid_from_sid are gone"
        for name in ("cors_allowed_origins", "max_http_buffer_size"):
            if not hasattr(srv.eio, name):
                return f"engineio Server.{name} is gone"
        return None

    required = [
        ExtensionPoint("socketio Server.packet_class, Manager.sid_from_eio_sid, engineio "
                       "Server.cors_allowed_origins/max_http_buffer_size",
                       "the limits decode events, find a client's sid, read the size limit",
                       public_names),
        ExtensionPoint("engineio Server.handlers", "the limits wrap the event handlers",
                       handlers),
        ExtensionPoint("engineio Server._async['websocket']",
                       "frames are screened before decoding; compression is refused",
                       websocket_driver),
        ExtensionPoint("engineio Server.sockets", "the limits close sessions without waiting",
                       sockets),
        ExtensionPoint("socketio Server.handlers",
                       "events no handler takes are dropped before a task is spawned",
                       event_handlers),
    ]
    fast = [
        ExtensionPoint("socketio Server._send_eio_packet",
                       "a packet encoded once is sent to many clients", send_eio_packet),
        ExtensionPoint("engineio Socket.schedule_ping and last_ping",
                       "one task pings every client", pings),
        ExtensionPoint("engineio Socket._websocket_handler and Socket.queue",
                       "WebSocket clients served without tasks of their own",
                       websocket_handler),
        ExtensionPoint("socketio Manager.basic_enter_room, basic_leave_room, basic_disconnect",
                       "a client's disconnect visits its own rooms, not every client's",
                       room_bookkeeping),
    ]
    return required, fast
