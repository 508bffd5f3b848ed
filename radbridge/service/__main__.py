"""`python -m radbridge.service [OPTIONS]`: the same command as `radbridge serve` (one entrypoint)."""

import sys

from ..cli import app

if __name__ == "__main__":
    app(["serve", *sys.argv[1:]], prog_name="radbridge")
