"""TGI's OpenAI-compatible routes: ``/v1/chat/completions`` (plain and streamed) and ``/v1/models``."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from .... import __version__
from ..local import RowRequest, Sampling
from .schemas import ROUTER, ApiError, ChatRequest, GenerateParameters, error_body, validation_error
from .service import ModelService

FINGERPRINT = f"{__version__}-{ROUTER}"


def openai_routes(svc: ModelService) -> APIRouter:
    router = APIRouter()
    model_id = svc.config.model_id

    @router.get("/v1/models")
    async def models():
        return {"id": model_id, "object": "model", "created": 0, "owned_by": model_id}

    @router.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        if body.tools or body.response_format:
            raise validation_error("tools and response_format are not supported by this server")
        if body.n not in (None, 1):
            raise validation_error("`n` must be 1")
        messages = [{"role": m.get("role", "user"), "content": _content_text(m.get("content"))} for m in body.messages]
        try:
            text = svc.model.chat_text(messages)
        except Exception as exc:  # TGI reports template failures as 422 template errors
            raise ApiError(422, "template_error", str(exc)) from None
        params = _generate_parameters(body)
        row, sampling, n_in = svc.validate(text, params, stream=body.stream)
        if body.stream:
            return StreamingResponse(chat_chunks(body, row, sampling, n_in), media_type="text/event-stream")
        result = await svc.batcher.submit(row, sampling)
        content = result.text
        for stop in params.stop:
            if content.endswith(stop):
                content = content[: -len(stop)]
        logprobs = None
        if body.logprobs:
            logprobs = {
                "content": [
                    {"token": t.text, "logprob": t.logprob, "top_logprobs": []}
                    for t in result.tokens
                    if t.logprob is not None
                ]
            }
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": model_id,
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": logprobs,
                    "finish_reason": "length" if result.finish_reason == "length" else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": n_in,
                "completion_tokens": len(result.tokens),
                "total_tokens": n_in + len(result.tokens),
            },
        }

    async def chat_chunks(body: ChatRequest, row: RowRequest, sampling: Sampling, n_in: int):
        """OpenAI-style chunks, one per token as it is chosen, then usage if asked for, then ``[DONE]``."""
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(choices: list, usage: dict | None = None) -> str:
            out = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model_id,
                   "system_fingerprint": FINGERPRINT, "choices": choices, "usage": usage}
            return f"data: {json.dumps(out)}\n\n"

        try:
            n_out = 0
            async for token, _top, result in svc.batcher.stream(row, sampling):
                n_out += 1
                choice = {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "" if token.special else token.text},
                    "logprobs": (
                        {"content": [{"token": token.text, "logprob": token.logprob, "top_logprobs": []}]}
                        if body.logprobs and token.logprob is not None else None
                    ),
                    "finish_reason": None,
                }
                if result is not None:
                    choice["finish_reason"] = "length" if result.finish_reason == "length" else "stop"
                yield chunk([choice])
            if (body.stream_options or {}).get("include_usage"):
                yield chunk([], {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out})
        except ApiError as exc:
            yield f"data: {json.dumps(error_body(exc))}\n\n"
        yield "data: [DONE]\n\n"

    return router


def _generate_parameters(body: ChatRequest) -> GenerateParameters:
    # TGI's chat API samples unless temperature is exactly 0 (or left out with a seed-less greedy client).
    greedy = body.temperature == 0
    return GenerateParameters(
        adapter_id=body.model,
        max_new_tokens=body.max_tokens,
        do_sample=not greedy,
        temperature=None if greedy else body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop or [],
    )


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text")
    return content or ""
