"""What a private dashboard (--access-token) costs a request and a Socket.IO connect.

Starts ``random_stream.py`` twice on CPU 0 (eventlet unless --async-mode says otherwise),
public and with a token, and drives each from this process on CPU 1 over loopback:

- ``GET /api/latest`` on one keep-alive connection, --requests times: the server's CPU per
  request and the client's median round trip, public, with the session cookie and with a
  bearer token;
- Socket.IO connects over a raw WebSocket (handshake, namespace CONNECT, the `history`
  snapshot), --connects times: the server's CPU per connect and the median time to the
  snapshot, public, with the cookie on the handshake and with the token in the CONNECT's
  auth;
- in this process, the checks themselves: a session cookie verified, a bearer token
  compared against each of two tokens.

    .venv/bin/python bench/access.py
    .venv/bin/python bench/access.py --requests 5000 --connects 1000 --async-mode gevent
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

TOKEN = "bench-access-token-0123456789"
OTHER = "bench-access-other-token-9876"


def start(name: str, tmp: Path, mode: str, cpus: set[int] | None, tokens: str | None):
    port = harness.free_port()
    env = {"RANDOM_STREAM_ACCESS_TOKEN": tokens} if tokens else {}
    server = harness.ServerProcess(
        name, [harness.PYTHON, str(harness.ROOT / "random_stream.py"), "--host", "127.0.0.1",
               "--port", str(port), "--db", ":memory:", "--interval", "0.5", "--history", "100",
               "--async-mode", mode], port, cpus, tmp / f"{name}.log", env=env)
    server.wait_ready()
    return server


def requests(server, count: int, headers: dict) -> tuple[float, float]:
    """(server CPU us per request, median round trip us) of GET /api/latest."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for _ in range(20):  # warm up: the connection, the first-request paths
        conn.request("GET", "/api/latest", headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, (response.status, headers)
    times = []
    cpu = server.cpu_seconds()
    for _ in range(count):
        t = time.perf_counter()
        conn.request("GET", "/api/latest", headers=headers)
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - t)
    cpu = server.cpu_seconds() - cpu
    conn.close()
    return cpu / count * 1e6, statistics.median(times) * 1e6


def connects(server, count: int, cookie: str | None, token: str | None) -> tuple[float, float]:
    """(server CPU us per connect, median ms to the `history` snapshot) over raw WebSockets."""
    import websocket

    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
    header = [f"Cookie: {cookie}"] if cookie else []
    join = "40" + (json.dumps({"token": token}) if token else "")

    def one() -> float:
        t = time.perf_counter()
        ws = websocket.create_connection(url, header=header, suppress_origin=True, timeout=10)
        try:
            assert ws.recv().startswith("0")
            ws.send(join)
            while True:
                frame = ws.recv()
                assert not frame.startswith("44"), frame
                if frame.startswith('42["history"'):
                    return time.perf_counter() - t
        finally:
            ws.close()

    for _ in range(5):
        one()
    cpu = server.cpu_seconds()
    times = [one() for _ in range(count)]
    cpu = server.cpu_seconds() - cpu
    return cpu / count * 1e6, statistics.median(times) * 1e3


def session_cookie(server) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", f"/?token={TOKEN}")
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.headers["Set-Cookie"].split(";")[0]


def checks() -> dict[str, float]:
    """Microseconds per check, in this process."""
    sys.path.insert(0, str(harness.ROOT))
    from randstream.access import Tokens

    tokens = Tokens((TOKEN, OTHER))
    session = tokens.sign(1, time.time())
    now = time.time()
    n = 20000
    return {
        "session cookie verified": timeit.timeit(lambda: tokens.valid(session, now), number=n) / n * 1e6,
        "bearer token matched (2 tokens)": timeit.timeit(lambda: tokens.match(OTHER), number=n) / n * 1e6,
        "wrong bearer token (2 tokens)": timeit.timeit(lambda: tokens.match("x" * 28), number=n) / n * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--connects", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5, help="rounds the counts are split into")
    parser.add_argument("--async-mode", default="eventlet", choices=("eventlet", "gevent", "threading"))
    args = parser.parse_args()
    cpus = harness.available_cpus()
    server_cpus = {cpus[0]} if len(cpus) > 1 else None
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[1]})
    print(f"async mode {args.async_mode}; {args.requests} requests, {args.connects} connects each")
    for name, us in checks().items():
        print(f"  in-process: {name}: {us:.2f} us")
    with tempfile.TemporaryDirectory() as tmp:
        public = start("public", Path(tmp), args.async_mode, server_cpus, None)
        private = start("private", Path(tmp), args.async_mode, server_cpus, f"{TOKEN},{OTHER}")
        try:
            time.sleep(1)  # a reading for /api/latest
            cookie = session_cookie(private)
            # Rounds taken in turn, so that the machine's drift (another job, the CPU's
            # clock) falls on every variant alike; the median round of each is printed.
            variants = [
                ("GET /api/latest, public", lambda n: requests(public, n, {})),
                ("GET /api/latest, private, cookie",
                 lambda n: requests(private, n, {"Cookie": cookie})),
                ("GET /api/latest, private, bearer",
                 lambda n: requests(private, n, {"Authorization": f"Bearer {OTHER}"})),
                ("Socket.IO connect, public", lambda n: connects(public, n, None, None)),
                ("Socket.IO connect, private, cookie",
                 lambda n: connects(private, n, cookie, None)),
                ("Socket.IO connect, private, auth token",
                 lambda n: connects(private, n, None, OTHER)),
            ]
            results = {label: [] for label, _ in variants}
            for _ in range(args.rounds):
                for label, run in variants:
                    n = args.requests if label.startswith("GET") else args.connects
                    results[label].append(run(max(1, n // args.rounds)))
            for label, _ in variants:
                cpu = statistics.median(r[0] for r in results[label])
                wall = statistics.median(r[1] for r in results[label])
                unit = ("us/request, round trip", "us") if label.startswith("GET") else \
                    ("us/connect, to history", "ms")
                print(f"  {label:38s} server CPU {cpu:7.1f} {unit[0]} {wall:7.2f} {unit[1]} (median)")
        finally:
            public.stop()
            private.stop()


if __name__ == "__main__":
    main()
