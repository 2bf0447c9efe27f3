"""The console command `random-stream` (and `python -m randstream`): what
`python random_stream.py` does, for an installed app.

Nothing heavy is imported here at module level: eventlet and gevent must patch the
standard library before Flask (or anything else) imports it, as random_stream.py does
when run as a script.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    from .server import prepare_async_mode

    prepare_async_mode(argv)
    import random_stream

    random_stream.main(argv)
