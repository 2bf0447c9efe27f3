"""A pull source that blocks for 3 seconds per call, like a C driver or a slow remote API.

    python random_stream.py --source examples/slow.py:read --interval 1

The call runs in a worker thread: pings, other clients and the page keep going, and a
tick that finds the previous call still running is skipped (counted in /metrics), so
readings arrive about every 3 s instead of piling up.
"""

import ctypes
import ctypes.util
import random
import time


def _block(seconds: int) -> None:
    # Really block the thread, as C code does: under eventlet or gevent a plain
    # time.sleep is monkey-patched into a cooperative one and would hide the point.
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).sleep(seconds)  # ctypes releases the GIL
    except (OSError, AttributeError, TypeError):  # no C library by that name: busy-wait
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass


def read() -> float:
    _block(3)
    return round(random.gauss(20.0, 0.5), 3)
