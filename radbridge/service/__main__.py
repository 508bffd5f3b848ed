"""`python -m radbridge.service`: the same command as `radbridge serve` (one entrypoint, settings read once)."""

from ..cli import app

if __name__ == "__main__":
    app(["serve"], prog_name="radbridge")
