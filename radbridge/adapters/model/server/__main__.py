"""``python -m radbridge.adapters.model.server``: the same command as ``radbridge serve-model``."""

import typer

from ....cli import serve_model

typer.run(serve_model)
