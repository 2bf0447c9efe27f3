"""Naive reference server: Flask-SocketIO the way a tutorial writes it.

Sleep-then-emit background task, ``socketio.run`` defaults (so eventlet's
``max_size=1024`` pool, ``debug=True`` and backlog 50 all apply). It speaks the
same ``random_number`` event as the real server so one load generator measures both.
Only a ``/healthz`` route is added, so the bench runner can tell when it is up.
"""

import argparse
import sys

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=5000)
parser.add_argument("--interval", type=float, default=1.0)
parser.add_argument("--async-mode", choices=["eventlet", "gevent"], default="eventlet")
args = parser.parse_args()

# Monkey patching has to happen before anything else imports socket/threading.
if args.async_mode == "eventlet":
    import eventlet

    eventlet.monkey_patch()
else:
    from gevent import monkey

    monkey.patch_all()

import random  # noqa: E402
import time  # noqa: E402

from flask import Flask  # noqa: E402
from flask_socketio import SocketIO  # noqa: E402

app = Flask(__name__)
socketio = SocketIO(app, async_mode=args.async_mode)
thread = None


def background_thread():
    n = 0
    while True:
        socketio.sleep(args.interval)
        n += 1
        socketio.emit(
            "random_number", {"seq": n, "value": random.randint(0, 100), "ts": time.time()}
        )


@app.route("/healthz")
def healthz():
    return {"status": "ok"}


@socketio.on("connect")
def connect():
    global thread
    if thread is None:
        thread = socketio.start_background_task(background_thread)


if __name__ == "__main__":
    # Start ticking right away so the bench sees readings before any client connects.
    thread = socketio.start_background_task(background_thread)
    print(f"naive_app {args.async_mode} on {args.host}:{args.port}", file=sys.stderr, flush=True)
    socketio.run(app, host=args.host, port=args.port)
