"""TgiGenerator / OpenAIGenerator against a tiny scripted HTTP server: retries, error mapping, order, adapter check."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from radbridge.adapters.model.openai import OpenAIGenerator
from radbridge.adapters.model.tgi import TgiGenerator
from radbridge.adapters.model.client import RetryPolicy, call_with_retry, map_error
from tgi_contract import load_contract
from radbridge.domain import GenerationParams
from radbridge.errors import AdapterMismatch, ConfigurationError, GenerationRejected, GeneratorUnavailable
from radbridge.prompt import DEFAULT_TEMPLATE, build, render

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, jitter=False)
CONTRACT = load_contract()


def _generate_ok(body: dict) -> dict:
    """A TGI-shaped answer whose text names the prompt's findings, so order can be checked."""
    findings = body["inputs"].split("Findings: ", 1)[-1].split("<|im_end|>", 1)[0]
    return {
        "generated_text": f"Impression for {findings}<|im_end|>",
        "details": {
            "finish_reason": "eos_token",
            "generated_tokens": 4,
            "seed": None,
            "prefill": [],
            "tokens": [{"id": 2, "text": "<|im_end|>", "logprob": -0.1, "special": True}],
        },
    }


class FakeServer:
    """Answers with ``script(method, path, body) -> (status, json | None, delay_s)``; records every call."""

    def __init__(self, script):
        self.script = script
        self.calls: list[tuple[str, str, dict | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method):
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                outer.calls.append((method, self.path, body))
                status, payload, delay = outer.script(method, self.path, body)
                time.sleep(delay)
                data = json.dumps(payload).encode() if payload is not None else b""
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def do_POST(self):
                self._reply("POST")

            def do_GET(self):
                self._reply("GET")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def posts(self, path: str) -> list[dict]:
        return [b for m, p, b in self.calls if m == "POST" and p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(script):
        servers.append(FakeServer(script))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def prompts(*findings: str):
    return [build(DEFAULT_TEMPLATE, f) for f in findings]


def test_tgi_request_is_explicit_and_valid_against_the_spec(serve):
    srv = serve(lambda m, p, b: (200, _generate_ok(b), 0))
    gen = TgiGenerator(srv.url, adapter="radiology", retry=FAST)
    [out] = gen.generate(prompts("Lungs clear."), GenerationParams(max_new_tokens=32))
    assert out.text == "Impression for Lungs clear."  # stop marker cut off
    assert out.finish_reason == "eos_token" and out.generated_tokens == 4
    [body] = srv.posts("/generate")
    CONTRACT.validate("GenerateRequest", body)
    params = body["parameters"]
    # TGI's spec and server disagree on these defaults, so every request states them
    assert params["details"] is True and params["do_sample"] is False and params["max_new_tokens"] == 32
    assert params["adapter_id"] == "radiology"
    assert params["stop"] == ["<|im_end|>", "<|im_start|>"]
    assert body["inputs"] == render(prompts("Lungs clear.")[0], "chatml")


def test_batch_is_concurrent_and_keeps_order(serve):
    in_flight, peak, lock = [0], [0], threading.Lock()

    def script(m, p, b):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.15 if "first" in b["inputs"] else 0.02)  # the first finishes last
        with lock:
            in_flight[0] -= 1
        return 200, _generate_ok(b), 0

    srv = serve(script)
    gen = TgiGenerator(srv.url, retry=FAST, concurrency=3)
    names = ["first", "second", "third", "fourth", "fifth"]
    out = gen.generate(prompts(*names), GenerationParams(max_new_tokens=8))
    assert [g.text for g in out] == [f"Impression for {n}" for n in names]
    assert 2 <= peak[0] <= 3


@pytest.mark.parametrize(
    "status,payload",
    [
        (503, None),
        (429, {"error": "Model is overloaded", "error_type": "overloaded"}),
        (424, {"error": "Request failed during generation", "error_type": "generation"}),
    ],
)
def test_transient_errors_are_retried_then_succeed(serve, status, payload):
    answers = iter([(status, payload, 0), (status, payload, 0)])
    srv = serve(lambda m, p, b: next(answers, (200, _generate_ok(b), 0)))
    slept = []
    gen = TgiGenerator(srv.url, retry=RetryPolicy(attempts=3, base_delay=0.01, jitter=False), sleep=slept.append)
    [out] = gen.generate(prompts("x"), GenerationParams(max_new_tokens=8))
    assert out.text == "Impression for x"
    assert len(srv.posts("/generate")) == 3
    assert slept == [0.01, 0.02]  # exponential backoff


def test_exhausted_retries_raise_generator_unavailable(serve):
    srv = serve(lambda m, p, b: (503, None, 0))
    gen = TgiGenerator(srv.url, retry=FAST)
    with pytest.raises(GeneratorUnavailable) as err:
        gen.generate(prompts("x"), GenerationParams(max_new_tokens=8))
    assert err.value.retryable
    assert len(srv.posts("/generate")) == FAST.attempts


def test_422_is_permanent_and_not_retried(serve):
    body = {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048", "error_type": "validation"}
    srv = serve(lambda m, p, b: (422, body, 0))
    gen = TgiGenerator(srv.url, retry=FAST)
    with pytest.raises(GenerationRejected) as err:
        gen.generate(prompts("x"), GenerationParams(max_new_tokens=8))
    assert not err.value.retryable and "422" in str(err.value)
    assert len(srv.posts("/generate")) == 1


def test_timeouts_are_retried_then_unavailable(serve):
    srv = serve(lambda m, p, b: (200, _generate_ok(b), 1.0))
    gen = TgiGenerator(srv.url, timeout=0.2, retry=FAST)
    started = time.monotonic()
    with pytest.raises(GeneratorUnavailable):
        gen.generate(prompts("x"), GenerationParams(max_new_tokens=8))
    assert time.monotonic() - started < 2.5  # three 0.2 s timeouts, not three 1 s answers
    assert len(srv.posts("/generate")) == FAST.attempts


def test_connection_refused_is_unavailable():
    srv = FakeServer(lambda m, p, b: (200, None, 0))
    url = srv.url
    srv.close()
    gen = TgiGenerator(url, retry=FAST)
    with pytest.raises(GeneratorUnavailable):
        gen.generate(prompts("x"), GenerationParams(max_new_tokens=8))
    with pytest.raises(GeneratorUnavailable):
        gen.check()


def test_404_is_a_configuration_error(serve):
    srv = serve(lambda m, p, b: (404, {"error": "not found", "error_type": "not_found"}, 0))
    with pytest.raises(ConfigurationError):
        TgiGenerator(srv.url, retry=FAST).generate(prompts("x"), GenerationParams(max_new_tokens=8))
    assert len(srv.posts("/generate")) == 1


def _tgi_with_adapter_effect(delta_for: dict[str | None, float], noise: float = 0.0):
    """A fake TGI whose prefill log-probabilities move by ``delta_for[adapter_id]`` (+ alternating noise)."""
    calls = [0]

    def script(m, p, b):
        if p == "/health":
            return 200, None, 0
        if p == "/info":
            return 200, {"model_id": "org/base", "version": "3.3.6", "router": "text-generation-router"}, 0
        calls[0] += 1
        shift = delta_for.get(b["parameters"].get("adapter_id"), 0.0) + noise * (calls[0] % 2)
        out = _generate_ok(b)
        out["details"]["prefill"] = [{"id": 1, "text": "a", "logprob": None}] + [
            {"id": i, "text": "t", "logprob": -1.0 - i / 10 + shift} for i in range(2, 8)
        ]
        return 200, out, 0

    return script


def test_check_passes_when_the_adapter_changes_logprobs(serve):
    srv = serve(_tgi_with_adapter_effect({"radiology": 0.05}))
    gen = TgiGenerator(srv.url, adapter="radiology", retry=FAST)
    gen.check()
    assert gen.info.base_model == "org/base"
    assert gen.info.server_version == "text-generation-router 3.3.6"
    probes = srv.posts("/generate")
    assert all(b["parameters"]["decoder_input_details"] is True for b in probes)
    assert [b["parameters"].get("adapter_id") for b in probes].count("radiology") == 1
    for b in probes:
        CONTRACT.validate("GenerateRequest", b)


def test_check_detects_the_silent_fallback_to_the_base_model(serve):
    srv = serve(_tgi_with_adapter_effect({}))  # any adapter_id: base model answers (TGI's pitfall)
    gen = TgiGenerator(srv.url, adapter="radiologyy", retry=FAST)
    with pytest.raises(AdapterMismatch, match="radiologyy"):
        gen.check()


def test_check_does_not_mistake_server_noise_for_an_adapter(serve):
    # A GPU server's batching moves the last digits; an effect no bigger than that noise is no adapter.
    srv = serve(_tgi_with_adapter_effect({"radiology": 0.002}, noise=0.002))
    with pytest.raises(AdapterMismatch):
        TgiGenerator(srv.url, adapter="radiology", retry=FAST).check()


def test_check_without_adapter_only_needs_health_and_info(serve):
    srv = serve(_tgi_with_adapter_effect({}))
    TgiGenerator(srv.url, retry=FAST).check()
    assert srv.posts("/generate") == []


def test_check_refuses_a_different_base_model(serve):
    srv = serve(_tgi_with_adapter_effect({}))
    with pytest.raises(ConfigurationError, match="org/base"):
        TgiGenerator(srv.url, base_model="meta-llama/Llama-2-7b-chat-hf", retry=FAST).check()


def _chat_ok(b: dict, logprobs: list[float] | None = None) -> dict:
    return {
        "id": "c",
        "created": 1,
        "model": "org/base",
        "system_fingerprint": "fp",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Impression: No acute disease."},
                "finish_reason": "stop",
                "logprobs": {"content": [{"token": "x", "logprob": v, "top_logprobs": []} for v in logprobs]}
                if logprobs
                else None,
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
    }


def test_openai_request_and_shared_error_mapping(serve):
    answers = iter([(503, None, 0)])
    srv = serve(lambda m, p, b: next(answers, (200, _chat_ok(b), 0)))
    gen = OpenAIGenerator(srv.url, adapter="radiology", retry=FAST)
    [out] = gen.generate(prompts("Lungs clear."), GenerationParams(max_new_tokens=16))
    assert out.text == "No acute disease." and out.finish_reason == "eos_token" and out.generated_tokens == 5
    bodies = srv.posts("/v1/chat/completions")
    assert len(bodies) == 2  # one 503, retried by the same code as the TGI backend
    CONTRACT.validate("ChatRequest", bodies[-1])
    assert bodies[-1]["model"] == "radiology" and bodies[-1]["temperature"] == 0.0 and bodies[-1]["max_tokens"] == 16
    assert [m["role"] for m in bodies[-1]["messages"]] == ["system", "user"]

    srv422 = serve(lambda m, p, b: (422, {"error": "bad", "error_type": "validation"}, 0))
    with pytest.raises(GenerationRejected):
        OpenAIGenerator(srv422.url, retry=FAST).generate(prompts("x"), GenerationParams(max_new_tokens=16))
    assert len(srv422.posts("/v1/chat/completions")) == 1


def test_openai_check_uses_model_list_and_logprob_probe(serve):
    def script(m, p, b):
        if p == "/v1/models":
            return 200, {"object": "list", "data": [{"id": "org/base"}, {"id": "radiology"}]}, 0
        shift = 0.3 if b["model"] == "radiology" else 0.0
        return 200, _chat_ok(b, [-0.5 + shift, -0.2, -0.1]), 0

    srv = serve(script)
    OpenAIGenerator(srv.url, adapter="radiology", base_model_name="org/base", retry=FAST).check()
    with pytest.raises(AdapterMismatch, match="does not list"):
        OpenAIGenerator(srv.url, adapter="other", base_model_name="org/base", retry=FAST).check()


def test_retry_helper_passes_permanent_errors_through_unchanged():
    err = GenerationRejected("no")
    calls = []

    def fail():
        calls.append(1)
        raise err

    with pytest.raises(GenerationRejected) as caught:
        call_with_retry(fail, FAST, "x", sleep=lambda s: None)
    assert caught.value is err and len(calls) == 1
    assert isinstance(map_error(TimeoutError(), "x"), GeneratorUnavailable)
