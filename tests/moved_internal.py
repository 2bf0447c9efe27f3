"""Start random_stream.py as if an upgrade had moved one library internal it relies on.

    python tests/moved_internal.py SIMULATION random_stream.py-arguments...

SIMULATION is one of SIMULATIONS below. Each leaves the library working (its own code
uses the new name), as a real upgrade would; only the fast path's start-up check can
notice, and the server must then serve through the libraries' own path.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rename_websocket_handler() -> None:
    """python-engineio renames Socket._websocket_handler (to _serve_websocket, say)."""
    from engineio import socket as eio_socket

    cls = eio_socket.Socket
    cls._serve_websocket = cls._websocket_handler
    # The library's own lookup of the old name still finds its handler; the method is gone.
    cls._websocket_handler = property(lambda self: self._serve_websocket)


def newer_engineio() -> None:
    """python-engineio 5.0.0 is installed: outside the tested range."""
    from importlib import metadata

    real = metadata.version
    metadata.version = lambda name: "5.0.0" if name == "python-engineio" else real(name)


def wrapped_gevent_handler() -> None:
    """gevent's WSGIHandler.handle becomes a wrapper (of the same code, say, by a newer
    release): the start-up check can no longer see how it treats its socket."""
    from gevent.pywsgi import WSGIHandler

    original = WSGIHandler.handle
    WSGIHandler.handle = lambda self: original(self)


SIMULATIONS = {"websocket_handler": rename_websocket_handler, "engineio_version": newer_engineio,
               "gevent_handler": wrapped_gevent_handler}

if __name__ == "__main__":
    from randstream.server import prepare_async_mode

    simulation, args = sys.argv[1], sys.argv[2:]
    prepare_async_mode(args)
    SIMULATIONS[simulation]()
    import random_stream

    random_stream.main(args)
