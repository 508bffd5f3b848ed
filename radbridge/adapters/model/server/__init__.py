"""A TGI-protocol model server over the in-process model, for CPU-only sites and for tests.

It speaks the subset of text-generation-inference's HTTP API radbridge and common clients use
(``/``, ``/generate``, ``/generate_stream``, ``/info``, ``/health``, ``/v1/chat/completions``, ``/v1/models``) with
TGI's request defaults, validation messages, status codes and error bodies. It also keeps TGI's pitfall on
purpose: an unknown ``adapter_id`` silently runs the base model (only a server-side warning), so the
client-side adapter check is exercised against realistic behaviour.

Concurrent requests are micro-batched (``batcher``): the first waiting request opens a short window, everything
that arrives within it (up to ``max_batch_size``) runs as one batched ``generate`` on a worker thread.
``/generate_stream`` sends each token as soon as the batch chooses it. The one command line is
``radbridge serve-model``; ``python -m radbridge.adapters.model.server`` runs the same command.
"""

from .app import create_app
from .batcher import MicroBatcher
from .run import parse_adapters, serve
from .schemas import ServerConfig

__all__ = ["MicroBatcher", "ServerConfig", "create_app", "parse_adapters", "serve"]
