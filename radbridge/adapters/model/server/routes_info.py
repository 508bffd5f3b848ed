"""TGI's ``/health`` (503 until the model is loaded) and ``/info``; ``/metrics`` for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Info, ProcessCollector, generate_latest

from .... import __version__
from .schemas import ApiError, error_response
from .service import ModelService


def _registry(svc: ModelService) -> tuple[CollectorRegistry, Info]:
    """One registry per app (no process-global state): what is served, requests in flight, process_* metrics."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    served = Info("radbridge_model_server", "radbridge version and the LoRA adapters served (name=sha256 of the "
                  "weights)", registry=registry)
    Gauge("radbridge_model_server_loaded", "1 once the base model is loaded", registry=registry).set_function(
        lambda: 1.0 if svc.model.loaded else 0.0)
    Gauge("radbridge_model_server_in_flight", "POST requests being answered", registry=registry).set_function(
        lambda: float(svc.in_flight))
    return registry, served


def info_routes(svc: ModelService) -> APIRouter:
    router = APIRouter()
    registry, served = _registry(svc)

    @router.get("/health")
    async def health():
        if not svc.model.loaded:
            return error_response(ApiError(503, "healthcheck", "unhealthy"))
        return Response(status_code=200)

    @router.get("/info")
    async def info():
        return svc.info()

    @router.get("/metrics")
    async def metrics():
        # filled at the first scrape, not at start: hashing the adapter weights is file I/O (cached by mtime)
        served.info({
            "version": __version__,
            "adapters": ",".join(f"{n}={svc.model.adapter_sha256(n)}" for n in sorted(svc.model.adapter_dirs)),
        })
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
