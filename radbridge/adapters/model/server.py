"""A TGI-protocol model server over the in-process model, for CPU-only sites and for tests.

It speaks the subset of text-generation-inference's HTTP API radbridge and common clients use
(``/``, ``/generate``, ``/generate_stream``, ``/info``, ``/health``, ``/v1/chat/completions``, ``/v1/models``) with
TGI's request defaults, validation messages, status codes and error bodies. It also keeps TGI's pitfall on
purpose: an unknown ``adapter_id`` silently runs the base model (only a server-side warning), so the
client-side adapter check is exercised against realistic behaviour.

Concurrent requests are micro-batched: the first waiting request opens a short window, everything that
arrives within it (up to ``max_batch_size``) runs as one batched ``generate`` on a worker thread.
``/generate_stream`` sends each token as soon as the batch chooses it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from ... import __version__
from .local import BASE_MODEL_ID, LocalModel, RowRequest, RowResult, Sampling

log = logging.getLogger(__name__)

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

    @property
    def input_limit(self) -> int:
        return self.max_input_tokens or self.max_total_tokens - 1


class ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def _validation(message: str) -> ApiError:
    return ApiError(422, "validation", f"Input validation error: {message}")


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


def _params(body: GenerateRequest) -> GenerateParameters:
    return body.parameters if body.parameters is not None else ROUTER_DEFAULTS


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


# ---- micro-batching ----------------------------------------------------------------------------------


@dataclass
class _Job:
    row: RowRequest
    sampling: Sampling
    future: asyncio.Future
    # Streaming requests: (token, is_last) as each is chosen, then None if the batch failed.
    tokens: asyncio.Queue | None = None


class MicroBatcher:
    """Gathers requests for a few milliseconds and runs each compatible group as one batch."""

    def __init__(self, model: LocalModel, max_batch_size: int, wait_ms: float):
        self.model = model
        self.max_batch_size = max_batch_size
        self.wait_s = wait_ms / 1000
        self.batches_run = 0
        self.rows_run = 0
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, row: RowRequest, sampling: Sampling) -> RowResult:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(row, sampling, future))
        return await future

    async def submit_stream(self, row: RowRequest, sampling: Sampling) -> tuple[asyncio.Queue, asyncio.Future]:
        """Like ``submit``, but each token also arrives on the returned queue while the batch runs."""
        future = asyncio.get_running_loop().create_future()
        tokens: asyncio.Queue = asyncio.Queue()
        await self._queue.put(_Job(row, sampling, future, tokens))
        return tokens, future

    async def _loop(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            deadline = time.monotonic() + self.wait_s
            while len(jobs) < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            groups: dict[Sampling, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.sampling, []).append(job)
            for sampling, group in groups.items():
                await self._run(sampling, group)

    async def _run(self, sampling: Sampling, group: list[_Job]) -> None:
        live = [j for j in group if not j.future.cancelled()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        on_token = None
        if any(j.tokens is not None for j in live):

            def on_token(index: int, token, last: bool) -> None:  # runs on the generation thread
                queue = live[index].tokens
                if queue is not None:
                    loop.call_soon_threadsafe(queue.put_nowait, (token, last))

        try:
            results = await asyncio.to_thread(self.model.generate, [j.row for j in live], sampling, on_token)
        except Exception as exc:  # the model failed mid-generation: TGI's 424
            log.exception("batch of %d failed", len(live))
            for job in live:
                if not job.future.done():
                    job.future.set_exception(ApiError(424, "generation", f"Request failed during generation: {exc}"))
                if job.tokens is not None:
                    job.tokens.put_nowait(None)
            return
        self.batches_run += 1
        self.rows_run += len(live)
        for job, result in zip(live, results):
            if not job.future.done():
                job.future.set_result(result)
            if job.tokens is not None:
                job.tokens.put_nowait(None)  # after every token: the thread's callbacks ran before this resumed


# ---- the app ---------------------------------------------------------------------------------------------


class _Service:
    """Validation and request → row translation, shared by the TGI and OpenAI-style routes."""

    def __init__(self, model: LocalModel, config: ServerConfig):
        self.model = model
        self.config = config
        self.batcher = MicroBatcher(model, config.max_batch_size, config.batch_wait_ms)
        self.in_flight = 0
        self._count_tok = None
        self._count_lock = threading.Lock()

    def count(self, text: str) -> int:
        # A private tokenizer copy: the generation thread's tokenizer changes its padding state per batch,
        # and the Rust tokenizer refuses concurrent use while it does ("Already borrowed").
        with self._count_lock:
            if self._count_tok is None:
                self._count_tok = copy.deepcopy(self.model.tokenizer)
            return len(self._count_tok(text, add_special_tokens=False)["input_ids"])

    def truncate_left(self, text: str, keep: int) -> str:
        with self._count_lock:
            ids = self._count_tok(text, add_special_tokens=False)["input_ids"]
            return self._count_tok.decode(ids[-keep:]) if len(ids) > keep else text

    def resolve_adapter(self, adapter_id: str | None) -> str | None:
        if adapter_id is None or adapter_id in BASE_ALIASES or adapter_id == self.config.model_id:
            return None
        if adapter_id in self.model.adapter_dirs:
            return adapter_id
        # TGI's behaviour, kept deliberately: the base model answers. Clients must detect this themselves.
        log.warning("unknown adapter_id %r: falling back to the base model", adapter_id)
        return None

    def validate(self, inputs: str, p: GenerateParameters, *, stream: bool) -> tuple[RowRequest, Sampling, int]:
        cfg = self.config
        if not inputs:
            raise _validation("`inputs` cannot be empty")
        if p.max_new_tokens is not None and p.max_new_tokens <= 0:
            raise _validation("`max_new_tokens` must be strictly positive")
        if p.temperature is not None and p.temperature <= 0:
            raise _validation("`temperature` must be strictly positive")
        if p.top_p is not None and not 0 < p.top_p < 1:
            raise _validation("`top_p` must be > 0.0 and < 1.0")
        if p.top_k is not None and p.top_k <= 0:
            raise _validation("`top_k` must be strictly positive")
        if p.repetition_penalty is not None and p.repetition_penalty <= 0:
            raise _validation("`repetition_penalty` must be strictly positive")
        if len(p.stop) > cfg.max_stop_sequences:
            raise _validation(f"`stop` supports up to {cfg.max_stop_sequences} stop sequences. Given: {len(p.stop)}")
        if p.best_of is not None and p.best_of > 1:
            raise _validation("`best_of` must be 1 on this server")
        if stream and p.decoder_input_details:
            raise _validation("`decoder_input_details` == true is not supported when streaming tokens")
        for name in ("grammar", "top_n_tokens", "typical_p", "frequency_penalty"):
            if getattr(p, name):
                raise _validation(f"`{name}` is not supported by this server")
        if p.watermark:
            raise _validation("`watermark` is not supported by this server")
        if p.truncate is not None:
            inputs = self.truncate_left(inputs, p.truncate)
        n_in = self.count(inputs)
        if n_in > cfg.input_limit:
            raise _validation(f"`inputs` must have less than {cfg.input_limit} tokens. Given: {n_in}")
        max_new = p.max_new_tokens if p.max_new_tokens is not None else cfg.max_total_tokens - n_in
        if n_in + max_new > cfg.max_total_tokens:
            raise _validation(
                f"`inputs` tokens + `max_new_tokens` must be <= {cfg.max_total_tokens}. "
                f"Given: {n_in} `inputs` tokens and {max_new} `max_new_tokens`"
            )
        sampling = Sampling(
            do_sample=p.do_sample,
            temperature=p.temperature if p.do_sample else None,
            top_p=p.top_p if p.do_sample else None,
            top_k=p.top_k if p.do_sample else None,
            repetition_penalty=p.repetition_penalty,
            seed=(p.seed if p.seed is not None else int(uuid.uuid4().int % 2**63)) if p.do_sample else None,
        )
        row = RowRequest(inputs, max_new, self.resolve_adapter(p.adapter_id), tuple(p.stop), p.decoder_input_details)
        return row, sampling, n_in

    def info(self) -> dict:
        cfg = self.config
        return {
            "model_id": cfg.model_id,
            "model_sha": self.model.base_sha256,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": cfg.max_concurrent_requests,
            "max_best_of": 1,
            "max_stop_sequences": cfg.max_stop_sequences,
            "max_input_tokens": cfg.input_limit,
            "max_total_tokens": cfg.max_total_tokens,
            "validation_workers": 1,
            "max_client_batch_size": 1,
            "router": ROUTER,
            "version": __version__,
            "sha": None,
            "docker_label": None,
        }


def _token(t) -> dict:
    return {"id": t.id, "text": t.text, "logprob": t.logprob, "special": t.special}


def _details(r: RowResult, with_prefill: bool) -> dict:
    out = {
        "finish_reason": r.finish_reason,
        "generated_tokens": len(r.tokens),
        "seed": r.seed,
        "prefill": [{"id": t.id, "text": t.text, "logprob": t.logprob} for t in r.prefill] if with_prefill else [],
        "tokens": [_token(t) for t in r.tokens],
    }
    return out


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.message, "error_type": exc.error_type}, status_code=exc.status)


def create_app(
    adapters: Mapping[str, str | Path] | None = None,
    *,
    model: LocalModel | None = None,
    config: ServerConfig = ServerConfig(),
) -> FastAPI:
    """The app; the model is loaded during startup (TGI, too, only answers once its model is warm)."""
    model = model or LocalModel(adapters or {}, batch_size=config.max_batch_size)
    svc = _Service(model, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(model.load)
        svc.count("warm up")
        svc.batcher.start()
        yield
        await svc.batcher.stop()

    app = FastAPI(title="radbridge model server (TGI protocol)", version=__version__, lifespan=lifespan)
    app.state.service = svc

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(_validation(f"{where}: {first.get('msg', 'invalid request body')}"))

    @app.middleware("http")
    async def _admission(request: Request, call_next):
        if request.method != "POST":
            return await call_next(request)
        if svc.in_flight >= config.max_concurrent_requests:
            return _error(ApiError(429, "overloaded", "Model is overloaded"))
        svc.in_flight += 1
        try:
            return await call_next(request)
        finally:
            svc.in_flight -= 1

    @app.get("/health")
    async def health():
        if not model.loaded:
            return _error(ApiError(503, "healthcheck", "unhealthy"))
        return Response(status_code=200)

    @app.get("/info")
    async def info():
        return svc.info()

    @app.get("/v1/models")
    async def models():
        return {"id": config.model_id, "object": "model", "created": 0, "owned_by": config.model_id}

    async def _generate(body: GenerateRequest) -> tuple[dict, dict[str, str]]:
        """TGI's GenerateResponse for one request, and its timing headers."""
        params = _params(body)
        started = time.monotonic()
        row, sampling, n_in = svc.validate(body.inputs, params, stream=False)
        result = await svc.batcher.submit(row, sampling)
        took = time.monotonic() - started
        text = (body.inputs + result.text) if params.return_full_text else result.text
        payload = {"generated_text": text, "details": _details(result, params.decoder_input_details) if params.details else None}
        n_out = len(result.tokens)
        headers = {
            "x-compute-type": "cpu",
            "x-total-time": str(int(took * 1000)),
            "x-prompt-tokens": str(n_in),
            "x-generated-tokens": str(n_out),
            "x-time-per-token": str(int(took * 1000 / max(n_out, 1))),
        }
        return payload, headers

    @app.post("/generate")
    async def generate(body: GenerateRequest):
        payload, headers = await _generate(body)
        return JSONResponse(payload, headers=headers)

    async def _tokens(row: RowRequest, sampling: Sampling):
        """(token, result) for each token as the batch chooses it; ``result`` only with the last one."""
        tokens, future = await svc.batcher.submit_stream(row, sampling)
        sent = 0
        while (item := await tokens.get()) is not None:
            token, last = item
            sent += 1
            yield token, (await future if last else None)
            if last:
                return
        # The batch ended without this row's last token on the queue: failed (the future raises), or a model
        # that does not report tokens as it goes; then the rest is replayed from the result.
        result = await future
        for i, token in enumerate(result.tokens[sent:], start=sent + 1):
            yield token, (result if i == len(result.tokens) else None)

    @app.post("/generate_stream")
    async def generate_stream(body: GenerateRequest):
        # Each token is sent as soon as the batch chooses it; the last event carries the text and details.
        async def events():
            try:
                params = _params(body)
                row, sampling, n_in = svc.validate(body.inputs, params, stream=True)
                index = 0
                async for token, result in _tokens(row, sampling):
                    index += 1
                    out = {"index": index, "token": _token(token), "generated_text": None, "details": None}
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
                yield f"data:{json.dumps({'error': exc.message, 'error_type': exc.error_type})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/")
    async def compat_generate(body: CompatGenerateRequest):
        # TGI's root route, which huggingface_hub's InferenceClient uses: a stream, or a one-element list.
        if body.stream:
            return await generate_stream(body)
        payload, headers = await _generate(body)
        return JSONResponse([payload], headers=headers)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        if body.tools or body.response_format:
            raise _validation("tools and response_format are not supported by this server")
        if body.n not in (None, 1):
            raise _validation("`n` must be 1")
        messages = [{"role": m.get("role", "user"), "content": _content_text(m.get("content"))} for m in body.messages]
        try:
            text = model.chat_text(messages)
        except Exception as exc:  # TGI reports template failures as 422 template errors
            raise ApiError(422, "template_error", str(exc)) from None
        # TGI's chat API samples unless temperature is exactly 0 (or left out with a seed-less greedy client).
        greedy = body.temperature == 0
        params = GenerateParameters(
            adapter_id=body.model,
            max_new_tokens=body.max_tokens,
            do_sample=not greedy,
            temperature=None if greedy else body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=body.stop or [],
        )
        row, sampling, n_in = svc.validate(text, params, stream=body.stream)
        if body.stream:
            return StreamingResponse(_chat_chunks(body, row, sampling, n_in), media_type="text/event-stream")
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
            "model": config.model_id,
            "system_fingerprint": f"{__version__}-{ROUTER}",
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

    async def _chat_chunks(body: ChatRequest, row: RowRequest, sampling: Sampling, n_in: int):
        """OpenAI-style chunks, one per token as it is chosen, then usage if asked for, then ``[DONE]``."""
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        fingerprint = f"{__version__}-{ROUTER}"

        def chunk(choices: list, usage: dict | None = None) -> str:
            out = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": config.model_id,
                   "system_fingerprint": fingerprint, "choices": choices, "usage": usage}
            return f"data: {json.dumps(out)}\n\n"

        try:
            n_out = 0
            async for token, result in _tokens(row, sampling):
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
            yield f"data: {json.dumps({'error': exc.message, 'error_type': exc.error_type})}\n\n"
        yield "data: [DONE]\n\n"

    return app


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text")
    return content or ""


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
) -> None:
    """Run the server until interrupted (blocking)."""
    import uvicorn

    config = ServerConfig(
        max_concurrent_requests=max_concurrent_requests,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        max_total_tokens=max_total_tokens,
    )
    missing = [name for name, path in (adapters or {}).items() if not path]
    if missing:
        raise ValueError(f"adapters without a path: {', '.join(missing)}")
    model = LocalModel({k: v for k, v in (adapters or {}).items() if v}, batch_size=max_batch_size, threads=threads)
    app = create_app(model=model, config=config)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import os

    ap = argparse.ArgumentParser(prog="python -m radbridge.adapters.model_server", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--lora-adapters", default=os.environ.get("LORA_ADAPTERS", ""), help="name=/path,name2=/path2")
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--max-concurrent-requests", type=int, default=128)
    ap.add_argument("--max-total-tokens", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(
        args.host,
        args.port,
        parse_adapters(args.lora_adapters),
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        max_concurrent_requests=args.max_concurrent_requests,
        max_total_tokens=args.max_total_tokens,
        threads=args.threads,
        log_level=args.log_level,
    )


if __name__ == "__main__":
    main()
