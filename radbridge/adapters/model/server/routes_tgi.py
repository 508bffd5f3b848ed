"""TGI's generation routes: ``/generate``, ``/generate_stream`` and the root route huggingface_hub uses."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from .schemas import ApiError, CompatGenerateRequest, GenerateRequest, details_body, error_body, token_body
from .service import ModelService


def tgi_routes(svc: ModelService) -> APIRouter:
    router = APIRouter()

    async def generate_once(body: GenerateRequest) -> tuple[dict, dict[str, str]]:
        """TGI's GenerateResponse for one request, and its timing headers."""
        params = body.effective_parameters
        started = time.monotonic()
        row, sampling, n_in = svc.validate(body.inputs, params, stream=False)
        result = await svc.batcher.submit(row, sampling)
        took = time.monotonic() - started
        text = (body.inputs + result.text) if params.return_full_text else result.text
        details = details_body(result, params.decoder_input_details) if params.details else None
        n_out = len(result.tokens)
        headers = {
            "x-compute-type": "cpu",
            "x-total-time": str(int(took * 1000)),
            "x-prompt-tokens": str(n_in),
            "x-generated-tokens": str(n_out),
            "x-time-per-token": str(int(took * 1000 / max(n_out, 1))),
        }
        return {"generated_text": text, "details": details}, headers

    async def stream_events(body: GenerateRequest):
        # Each token is sent as soon as the batch chooses it; the last event carries the text and details.
        try:
            params = body.effective_parameters
            row, sampling, n_in = svc.validate(body.inputs, params, stream=True)
            index = 0
            async for token, top, result in svc.batcher.stream(row, sampling):
                index += 1
                out = {"index": index, "token": token_body(token), "top_tokens": [token_body(t) for t in top],
                       "generated_text": None, "details": None}
                if result is not None:
                    out["generated_text"] = (body.inputs + result.text) if params.return_full_text else result.text
                    if params.details:
                        out["details"] = {
                            "finish_reason": result.finish_reason,
                            "generated_tokens": len(result.tokens),
                            "input_length": n_in,
                            "seed": result.seed,
                        }
                yield f"data:{json.dumps(out)}\n\n"
        except ApiError as exc:
            yield f"data:{json.dumps(error_body(exc))}\n\n"

    @router.post("/generate")
    async def generate(body: GenerateRequest):
        payload, headers = await generate_once(body)
        return JSONResponse(payload, headers=headers)

    @router.post("/generate_stream")
    async def generate_stream(body: GenerateRequest):
        return StreamingResponse(stream_events(body), media_type="text/event-stream")

    @router.post("/")
    async def compat_generate(body: CompatGenerateRequest):
        # TGI's root route, which huggingface_hub's InferenceClient uses: a stream, or a one-element list.
        if body.stream:
            return StreamingResponse(stream_events(body), media_type="text/event-stream")
        payload, headers = await generate_once(body)
        return JSONResponse([payload], headers=headers)

    return router
