"""What one client's disconnect costs the client manager, in process, at N clients.

    .venv/bin/python bench/disconnect_cost.py [--clients 10000] [--disconnects 1000] [--rooms 1]

A real python-socketio Server (threading mode, no network) with the fast path's client
manager (FastManager) or python-socketio's own (--manager library). N clients are
registered the way a join does (Manager.connect: the sid room and the namespace's None
room), each also in --rooms shared rooms; then --disconnects of them are disconnected
(Manager.disconnect, what a client's disconnect ends in) and each call is timed.
Prints one line: the manager, N, the mean and p99 per disconnect, and the bookkeeping's
memory per client (tracemalloc, the registration only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import socketio  # noqa: E402

from randstream.transport.engineio import FastManager  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--disconnects", type=int, default=1_000)
    parser.add_argument("--rooms", type=int, default=0, help="shared rooms each client is in")
    parser.add_argument("--manager", choices=("fast", "library"), default="fast")
    args = parser.parse_args(argv)

    manager = FastManager() if args.manager == "fast" else socketio.Manager()
    socketio.Server(async_mode="threading", client_manager=manager)  # sets the manager up
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    sids = []
    for i in range(args.clients):
        sid = manager.connect(f"eio-{i}", "/")
        for r in range(args.rooms):
            manager.enter_room(sid, "/", f"room-{r}")
        sids.append(sid)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))

    took = []
    for sid in sids[:args.disconnects]:
        start = time.perf_counter()
        manager.disconnect(sid, "/")
        took.append(time.perf_counter() - start)
    assert len(manager.rooms["/"][None]) == args.clients - args.disconnects
    p99 = statistics.quantiles(took, n=100)[98] if len(took) >= 2 else took[0]
    print(f"{type(manager).__name__}: {args.clients} clients, "
          f"{args.rooms} shared room(s) each: {args.disconnects} disconnects, "
          f"mean {statistics.fmean(took) * 1e6:.1f} us, p99 {p99 * 1e6:.1f} us, "
          f"bookkeeping {grown / args.clients:.0f} B/client")


if __name__ == "__main__":
    main()
