"""`python -m radbridge.service [OPTIONS]`: the same command as `radbridge serve` (one entrypoint)."""

import sys

from ..cli import main

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]])  # main: configuration errors are one line, as for `radbridge serve`
