"""``create_app``: the route groups over one ``ModelService``, with TGI's error bodies and admission limit."""

from __future__ import annotations

import asyncio
import hmac
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from .... import __version__
from ..local import LocalModel
from .routes_info import info_routes
from .routes_openai import openai_routes
from .routes_tgi import tgi_routes
from .schemas import ApiError, ServerConfig, error_response, validation_error
from .service import ModelService


def create_app(
    adapters: Mapping[str, str | Path] | None = None,
    *,
    model: LocalModel | None = None,
    config: ServerConfig = ServerConfig(),
) -> FastAPI:
    """The app; the model is loaded during startup (TGI, too, only answers once its model is warm)."""
    model = model or LocalModel(adapters or {}, batch_size=config.max_batch_size)
    svc = ModelService(model, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(model.load)
        svc.count("warm up")
        svc.batcher.start()
        yield
        await svc.batcher.stop()

    app = FastAPI(title="radbridge model server (TGI protocol)", version=__version__, lifespan=lifespan)
    app.state.service = svc
    _add_error_handlers(app)
    _add_admission_limit(app, svc)
    if config.api_key:
        _add_bearer_auth(app, config.api_key)
    for router in (info_routes(svc), openai_routes(svc), tgi_routes(svc)):
        app.include_router(router)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, exc: RequestValidationError):
        # TGI answers a malformed body with its own 422 shape, not FastAPI's detail list
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error_response(validation_error(f"{where}: {first.get('msg', 'invalid request body')}"))


def _add_admission_limit(app: FastAPI, svc: ModelService) -> None:
    """More than ``max_concurrent_requests`` POSTs in flight: 429 overloaded, as TGI."""

    @app.middleware("http")
    async def _admission(request: Request, call_next):
        if request.method != "POST":
            return await call_next(request)
        if svc.in_flight >= svc.config.max_concurrent_requests:
            return error_response(ApiError(429, "overloaded", "Model is overloaded"))
        svc.in_flight += 1
        try:
            return await call_next(request)
        finally:
            svc.in_flight -= 1


def _add_bearer_auth(app: FastAPI, api_key: str) -> None:
    """Bearer-token check on every route but /health (load balancers probe it without credentials)."""
    expected = f"Bearer {api_key}".encode()

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if request.url.path == "/health":
            return await call_next(request)
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return error_response(ApiError(401, "unauthorized", "missing or wrong bearer token"))
        return await call_next(request)
