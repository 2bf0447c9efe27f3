"""`python -m randstream`: the same as the console command `random-stream`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.argv[0] = "python -m randstream"  # what --help names
    main()
