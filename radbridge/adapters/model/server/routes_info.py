"""TGI's ``/health`` (503 until the model is loaded) and ``/info``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from .schemas import ApiError, error_response
from .service import ModelService


def info_routes(svc: ModelService) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health():
        if not svc.model.loaded:
            return error_response(ApiError(503, "healthcheck", "unhealthy"))
        return Response(status_code=200)

    @router.get("/info")
    async def info():
        return svc.info()

    return router
