"""TGI's and OpenAI's request bodies, TGI's defaults and error bodies, and the server's limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from ..local import BASE_MODEL_ID, RowResult

ROUTER = "radbridge-model-server"
BASE_ALIASES = ("tgi",)  # TGI's chat API treats model="tgi" as "no adapter"


@dataclass(frozen=True)
class ServerConfig:
    model_id: str = BASE_MODEL_ID
    max_concurrent_requests: int = 128
    max_batch_size: int = 8
    batch_wait_ms: float = 5.0
    max_total_tokens: int = 2048
    max_input_tokens: int | None = None  # TGI's default: max_total_tokens - 1
    max_stop_sequences: int = 4
    # Set: every route but /health needs "Authorization: Bearer <api_key>" (compared in constant time).
    api_key: str | None = field(default=None, repr=False)

    @property
    def input_limit(self) -> int:
        return self.max_input_tokens or self.max_total_tokens - 1


class ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def validation_error(message: str) -> ApiError:
    return ApiError(422, "validation", f"Input validation error: {message}")


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=exc.status)


def error_body(exc: ApiError) -> dict:
    return {"error": exc.message, "error_type": exc.error_type}


# ---- request bodies (mirroring TGI's GenerateRequest / GenerateParameters / ChatRequest) -------------


class GenerateParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    adapter_id: str | None = None
    best_of: int | None = None
    decoder_input_details: bool = False
    details: bool = False  # serde default, whatever the published spec says
    do_sample: bool = False
    frequency_penalty: float | None = None
    grammar: dict | None = None
    max_new_tokens: int | None = None
    repetition_penalty: float | None = None
    return_full_text: bool | None = None
    seed: int | None = None
    stop: list[str] = []
    temperature: float | None = None
    top_k: int | None = None
    top_n_tokens: int | None = None
    top_p: float | None = None
    truncate: int | None = None
    typical_p: float | None = None
    watermark: bool = False


# TGI's router uses these when the request has no "parameters" object at all (note: sampling on).
ROUTER_DEFAULTS = GenerateParameters(do_sample=True)


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: str
    parameters: GenerateParameters | None = None

    @property
    def effective_parameters(self) -> GenerateParameters:
        return self.parameters if self.parameters is not None else ROUTER_DEFAULTS


class CompatGenerateRequest(GenerateRequest):
    stream: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    messages: list[dict[str, Any]]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    n: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    response_format: dict | None = None
    tools: list | None = None


# ---- response pieces -----------------------------------------------------------------------------------


def token_body(t) -> dict:
    return {"id": t.id, "text": t.text, "logprob": t.logprob, "special": t.special}


def details_body(r: RowResult, with_prefill: bool) -> dict:
    return {
        "finish_reason": r.finish_reason,
        "generated_tokens": len(r.tokens),
        "seed": r.seed,
        "prefill": [{"id": t.id, "text": t.text, "logprob": t.logprob} for t in r.prefill] if with_prefill else [],
        "tokens": [token_body(t) for t in r.tokens],
        "top_tokens": [[token_body(t) for t in step] for step in r.top_tokens],
    }
