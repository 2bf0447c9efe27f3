"""Bench-only peer: python-socketio's AsyncServer as an ASGI app on uvicorn.

Same contract as random_stream.py's live stream: ``random_number`` {seq, value, ts} to
every client each interval, ``GET /healthz`` for bench/run.py. Listens on 127.0.0.1.

    python bench/peers/asgi_app.py --port 5000 --interval 1
"""

import argparse
import asyncio
import random
import sys
import time

import socketio
import uvicorn

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=5000)
parser.add_argument("--interval", type=float, default=1.0)
args = parser.parse_args()
if args.host not in ("127.0.0.1", "localhost", "::1"):
    parser.error("--host must be a loopback address")

sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"])


async def healthz(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"status": "ok"}'})


app = socketio.ASGIApp(sio, other_asgi_app=healthz)


async def ticker() -> None:
    # Scheduled against the start time (no drift), as the other servers do.
    start = time.monotonic()
    seq = 0
    while True:
        await asyncio.sleep(max(0.0, start + (seq + 1) * args.interval - time.monotonic()))
        seq += 1
        await sio.emit("random_number", {"seq": seq, "value": random.randint(0, 100), "ts": time.time()})


class Server(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)
        asyncio.get_running_loop().create_task(ticker())


if __name__ == "__main__":
    print(f"python-socketio ASGI on uvicorn, {args.host}:{args.port}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                            ws_per_message_deflate=False, backlog=2048)
    Server(config).run()
