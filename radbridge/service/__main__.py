"""`python -m radbridge.service`: the same as `radbridge serve`, settings from RADBRIDGE_* only."""

from ..logs import configure
from ..settings import Settings
from .runner import serve

if __name__ == "__main__":
    settings = Settings()
    configure(settings.log_level)
    serve(settings)
