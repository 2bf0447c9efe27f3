"""Start random_stream.py with a window on what closed connections leave in memory.

    python tests/memory_probe.py REPORT_PATH random_stream.py-arguments...

From the start gc.DEBUG_SAVEALL is on: what only a garbage collection would free (objects
in reference cycles) is kept in gc.garbage, to be counted, instead of freed. SIGUSR2 takes
a copy of engine.io's table of sessions, as engine.io's service task does for up to a
ping timeout while it walks it. SIGUSR1 runs a full collection and writes a JSON report
to REPORT_PATH: the Flask request contexts, engine.io's sessions and our connections found
in reference cycles, and the closed sockets still reachable from the copied sessions.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if __name__ == "__main__":
    from randstream.server import prepare_async_mode

    report_path, args = sys.argv[1], sys.argv[2:]
    prepare_async_mode(args)

    import _socket
    import gc
    import json
    import os
    import signal

    from flask.ctx import RequestContext

    import randstream.server
    from randstream.transport.websocket import Connection

    gc.set_debug(gc.DEBUG_SAVEALL)
    served = {}
    serve = randstream.server.serve

    def serve_and_remember(app, sock):
        served["eio"] = app.extensions["socketio"].server.eio
        serve(app, sock)

    randstream.server.serve = serve_and_remember

    def copy_sessions(signum, frame):
        served["copy"] = list(served["eio"].sockets.values())

    def closed_sockets(roots, depth=4) -> int:
        """Closed sockets reachable from `roots` within `depth` references, not through
        the engine.io server (whose table holds the live sessions)."""
        seen, found, layer = {id(served["eio"])}, 0, list(roots)
        for _ in range(depth):
            following = []
            for obj in layer:
                for ref in gc.get_referents(obj):
                    if id(ref) in seen or isinstance(ref, type):
                        continue
                    seen.add(id(ref))
                    if isinstance(ref, _socket.socket) and ref.fileno() == -1:
                        found += 1
                    following.append(ref)
            layer = following
        return found

    def report(signum, frame):
        gc.collect()
        cyclic = [type(o) for o in gc.garbage]
        eio_socket = type(served["copy"][0]) if served.get("copy") else None
        result = {
            "request_contexts_in_cycles": sum(issubclass(kind, RequestContext) for kind in cyclic),
            "sessions_in_cycles": sum(kind is eio_socket for kind in cyclic),
            "connections_in_cycles": sum(issubclass(kind, Connection) for kind in cyclic),
            "closed_sockets_held": closed_sockets(served.get("copy", [])),
            "copied_sessions": len(served.get("copy", [])),
        }
        with open(report_path + ".part", "w") as out:
            json.dump(result, out)
        os.replace(report_path + ".part", report_path)

    signal.signal(signal.SIGUSR2, copy_sessions)
    signal.signal(signal.SIGUSR1, report)
    import random_stream

    random_stream.main(args)
