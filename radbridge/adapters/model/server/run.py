"""Running the server: TGI's ``LORA_ADAPTERS`` syntax and ``serve`` (uvicorn, blocking)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..local import LocalModel
from .app import create_app
from .schemas import ServerConfig


def parse_adapters(spec: str | None) -> dict[str, str]:
    """TGI's ``LORA_ADAPTERS`` syntax, local entries only: ``name=/path,name2=/path2``."""
    out: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in (spec or "").split(","))):
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"adapter entry {entry!r} is not name=/path")
        out[name.strip()] = path.strip()
    return out


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    adapters: Mapping[str, str | Path | None] | None = None,
    *,
    max_batch_size: int = 8,
    batch_wait_ms: float = 5.0,
    max_concurrent_requests: int = 128,
    max_total_tokens: int = 2048,
    threads: int | None = None,
    log_level: str = "info",
    api_key: str | None = None,
) -> None:
    """Run the server until interrupted (blocking). Logging is the caller's: uvicorn only sets its levels."""
    import uvicorn

    config = ServerConfig(
        max_concurrent_requests=max_concurrent_requests,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        max_total_tokens=max_total_tokens,
        api_key=api_key,
    )
    if not api_key and not _loopback(host):
        raise ValueError(f"refusing to serve on {host} without an API key: set --api-key or RADBRIDGE_MODEL_API_KEY "
                         "(or bind to 127.0.0.1)")
    missing = [name for name, path in (adapters or {}).items() if not path]
    if missing:
        raise ValueError(f"adapters without a path: {', '.join(missing)}")
    model = LocalModel({k: v for k, v in (adapters or {}).items() if v}, batch_size=max_batch_size, threads=threads)
    app = create_app(model=model, config=config)
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), log_config=None)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
