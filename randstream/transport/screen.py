"""The frame screen as a wrapper of engine.io's WebSocket driver class.

Installed by randstream.transport through engineio.wrap_websocket_driver, on either path: every
frame a client sends passes the hooks' `screen_frame` (hooks.py) before engine.io decodes it.
"""

from __future__ import annotations

import functools


def screened(screen_frame, limit: int):
    """A wrap_websocket_driver wrapper: frames pass `screen_frame(data, eio_sid=...) -> bool`
    before engine.io; simple-websocket reads messages of at most `limit` bytes."""
    return functools.partial(_checked_websocket, screen_frame=screen_frame, limit=limit)


def _checked_websocket(driver, screen_frame, limit: int):
    """engine.io's WebSocket driver class, with every incoming frame checked before decoding.

    The WebSocket object engine.io gets is the driver's own (other wrappers, such as the
    compression refusal above, may rely on that); only its `wait` is shadowed.
    """

    class CheckedWebSocket(driver):
        def __init__(self, handler, server):
            # The engine.io socket's sid: the screen keeps per-connection allowances.
            eio_sid = getattr(getattr(handler, "__self__", None), "sid", None)

            def checked(ws):
                ws.screen = functools.partial(screen_frame, eio_sid=eio_sid)
                ws.wait = _checked_wait(ws.wait, ws.screen)  # the direct path reads without wait
                try:
                    return handler(ws)
                finally:
                    del ws.wait  # it refers back to ws: no cycle to outlive the handler

            if hasattr(handler, "__self__"):  # the engine.io socket, for wrappers outside this one
                checked.__self__ = handler.__self__
            super().__init__(checked, server)
            # simple-websocket (threading, gevent) reads a whole message before engine.io
            # measures it; with the limit it stops reading at the buffer size.
            if isinstance(getattr(self, "server_args", None), dict):
                self.server_args.setdefault("max_message_size", limit)

    return CheckedWebSocket


def _checked_wait(wait, screen):
    def checked_wait():
        data = wait()
        if data is not None and not screen(data):
            return None  # engine.io then closes this connection as if the client had
        return data

    return checked_wait


