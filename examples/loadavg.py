"""A pull source: the 1-minute CPU load average.

    python random_stream.py --source examples/loadavg.py:read --interval 2
"""

import os


def read() -> float:
    """Called once per tick, in a worker thread; the number becomes the next reading."""
    return round(os.getloadavg()[0], 2)
