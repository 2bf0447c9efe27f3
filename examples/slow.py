"""A pull source that blocks for 3 seconds per call, like a slow sensor or a remote API.

    python random_stream.py --source examples/slow.py:read --interval 1

The call runs in a worker thread: pings, other clients and the page keep going, and a
tick that finds the previous call still running is skipped (counted in /metrics),
so readings arrive about every 3 s instead of piling up.
"""

import random
import time


def read() -> float:
    time.sleep(3)  # a blocking call: no eventlet or gevent friendliness needed
    return round(random.gauss(20.0, 0.5), 3)
