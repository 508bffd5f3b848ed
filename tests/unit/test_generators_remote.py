"""TgiGenerator / OpenAIGenerator against a tiny scripted HTTP server: one try per call, error mapping, order,
adapter check; and the bounded retry CLI commands wrap them in."""

from __future__ import annotations

import json
import math
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radbridge.adapters.model.openai import OpenAIGenerator
from radbridge.adapters.model.tgi import TgiGenerator
from radbridge.adapters.model.client import call_once, map_error
from radbridge.cli import app
from tgi_contract import load_contract
from radbridge.domain import GenerationParams
from radbridge.errors import AdapterMismatch, ConfigurationError, GenerationRejected, GeneratorUnavailable
from radbridge.prompt import DEFAULT_TEMPLATE, build, render
from radbridge.retry import RetryingGenerator, RetryPolicy
from radbridge.settings import Settings

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
        self.auth: list[str | None] = []  # the Authorization header of each call
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method):
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                outer.calls.append((method, self.path, body))
                outer.auth.append(self.headers.get("authorization"))
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
    gen = TgiGenerator(srv.url, adapter="radiology")
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
    gen = TgiGenerator(srv.url, concurrency=3)
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
def test_transient_errors_are_tried_once_and_raised_as_retryable(serve, status, payload):
    answers = iter([(status, payload, 0)])
    srv = serve(lambda m, p, b: next(answers, (200, _generate_ok(b), 0)))
    gen = TgiGenerator(srv.url)
    with pytest.raises(GeneratorUnavailable) as err:
        gen.generate(prompts("x"), GenerationParams(max_new_tokens=8))
    assert err.value.retryable
    assert len(srv.posts("/generate")) == 1  # the adapter does not retry: its caller decides
    [out] = gen.generate(prompts("x"), GenerationParams(max_new_tokens=8))  # the next call is a fresh try
    assert out.text == "Impression for x"
    assert len(srv.posts("/generate")) == 2


def test_422_is_permanent_and_not_retried(serve):
    body = {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048", "error_type": "validation"}
    srv = serve(lambda m, p, b: (422, body, 0))
    gen = TgiGenerator(srv.url)
    with pytest.raises(GenerationRejected) as err:
        gen.generate(prompts("x"), GenerationParams(max_new_tokens=8))
    assert not err.value.retryable and "422" in str(err.value)
    assert len(srv.posts("/generate")) == 1


def test_a_hung_server_costs_one_timeout_per_call(serve):
    srv = serve(lambda m, p, b: (200, _generate_ok(b), 1.0))
    gen = TgiGenerator(srv.url, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(GeneratorUnavailable):
        gen.generate(prompts("x"), GenerationParams(max_new_tokens=8))
    assert time.monotonic() - started < 0.9  # one 0.2 s timeout, not a 1 s answer nor several tries
    assert len(srv.posts("/generate")) == 1


def test_connection_refused_is_unavailable():
    srv = FakeServer(lambda m, p, b: (200, None, 0))
    url = srv.url
    srv.close()
    gen = TgiGenerator(url)
    with pytest.raises(GeneratorUnavailable):
        gen.generate(prompts("x"), GenerationParams(max_new_tokens=8))
    with pytest.raises(GeneratorUnavailable):
        gen.check()


def test_404_is_a_configuration_error(serve):
    srv = serve(lambda m, p, b: (404, {"error": "not found", "error_type": "not_found"}, 0))
    with pytest.raises(ConfigurationError):
        TgiGenerator(srv.url).generate(prompts("x"), GenerationParams(max_new_tokens=8))
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
    gen = TgiGenerator(srv.url, adapter="radiology")
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
    gen = TgiGenerator(srv.url, adapter="radiologyy")
    with pytest.raises(AdapterMismatch, match="radiologyy"):
        gen.check()


def test_check_does_not_mistake_server_noise_for_an_adapter(serve):
    # A GPU server's batching moves the last digits; an effect no bigger than that noise is no adapter.
    srv = serve(_tgi_with_adapter_effect({"radiology": 0.002}, noise=0.002))
    with pytest.raises(AdapterMismatch):
        TgiGenerator(srv.url, adapter="radiology").check()


def test_check_without_adapter_only_needs_health_and_info(serve):
    srv = serve(_tgi_with_adapter_effect({}))
    TgiGenerator(srv.url).check()
    assert srv.posts("/generate") == []


def test_check_refuses_a_different_base_model(serve):
    srv = serve(_tgi_with_adapter_effect({}))
    with pytest.raises(ConfigurationError, match="org/base"):
        TgiGenerator(srv.url, base_model="meta-llama/Llama-2-7b-chat-hf").check()


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
    gen = OpenAIGenerator(srv.url, adapter="radiology")
    with pytest.raises(GeneratorUnavailable):  # mapped by the same code as the TGI backend, tried once
        gen.generate(prompts("Lungs clear."), GenerationParams(max_new_tokens=16))
    [out] = gen.generate(prompts("Lungs clear."), GenerationParams(max_new_tokens=16))
    # generators only cut at stop markers: the "Impression:" label is the core's to strip (prompt.clean_completion)
    assert out.text == "Impression: No acute disease." and out.finish_reason == "eos_token" and out.generated_tokens == 5
    bodies = srv.posts("/v1/chat/completions")
    assert len(bodies) == 2
    CONTRACT.validate("ChatRequest", bodies[-1])
    assert bodies[-1]["model"] == "radiology" and bodies[-1]["temperature"] == 0.0 and bodies[-1]["max_tokens"] == 16
    assert [m["role"] for m in bodies[-1]["messages"]] == ["system", "user"]

    srv422 = serve(lambda m, p, b: (422, {"error": "bad", "error_type": "validation"}, 0))
    with pytest.raises(GenerationRejected):
        OpenAIGenerator(srv422.url).generate(prompts("x"), GenerationParams(max_new_tokens=16))
    assert len(srv422.posts("/v1/chat/completions")) == 1


def test_openai_check_uses_model_list_and_logprob_probe(serve):
    def script(m, p, b):
        if p == "/v1/models":
            return 200, {"object": "list", "data": [{"id": "org/base"}, {"id": "radiology"}]}, 0
        shift = 0.3 if b["model"] == "radiology" else 0.0
        return 200, _chat_ok(b, [-0.5 + shift, -0.2, -0.1]), 0

    srv = serve(script)
    OpenAIGenerator(srv.url, adapter="radiology", base_model_name="org/base").check()
    with pytest.raises(AdapterMismatch, match="does not list"):
        OpenAIGenerator(srv.url, adapter="other", base_model_name="org/base").check()


def test_call_once_passes_radbridge_errors_through_unchanged_and_maps_others():
    err = GenerationRejected("no")
    calls = []

    def fail():
        calls.append(1)
        raise err

    with pytest.raises(GenerationRejected) as caught:
        call_once(fail, "x")
    assert caught.value is err and len(calls) == 1
    with pytest.raises(GeneratorUnavailable) as mapped:
        call_once(lambda: (_ for _ in ()).throw(TimeoutError()), "x")
    assert isinstance(mapped.value.__cause__, TimeoutError)
    assert isinstance(map_error(TimeoutError(), "x"), GeneratorUnavailable)


# -- the bounded retry of CLI commands: the one RetryPolicy, wrapped around the one-try adapter ----------------

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def _down_then_up(failures: int, ok):
    """A script that answers 503 ``failures`` times on /generate and /health, then ``ok``."""
    left = [failures]

    def script(m, p, b):
        if left[0] > 0:
            left[0] -= 1
            return 503, None, 0
        return ok(m, p, b)

    return script


def test_retry_policy_from_settings_bounds_cli_and_not_the_service():
    settings = Settings(max_retries=2, retry_initial_s=0.25, retry_max_s=3.0)
    cli, service = RetryPolicy.from_settings(settings), RetryPolicy.from_settings(settings, bounded=False)
    assert (cli.initial_s, cli.max_s, cli.attempts) == (0.25, 3.0, 3)
    assert service.attempts is None and service.initial_s == 0.25 and service.max_s == 3.0
    exact = RetryPolicy(initial_s=0.25, max_s=3.0, jitter=0)
    assert [exact.delay(n) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_bounded_retry_around_the_one_try_adapter(serve, caplog):
    srv = serve(_down_then_up(2, lambda m, p, b: (200, _generate_ok(b), 0)))
    slept: list[float] = []
    policy = RetryPolicy(initial_s=0.01, max_s=0.02, attempts=3, jitter=0)
    gen = RetryingGenerator(TgiGenerator(srv.url), policy, sleep=slept.append)
    secret = "Left upper lobe nodule 9 mm."
    with caplog.at_level(logging.WARNING, logger="radbridge.retry"):
        [out] = gen.generate(prompts(secret), GenerationParams(max_new_tokens=8))
    assert out.text == f"Impression for {secret}"
    assert len(srv.posts("/generate")) == 3 and slept == [0.01, 0.02]
    retries = [r for r in caplog.records if r.name == "radbridge.retry"]
    assert [(r.error_type, r.retry) for r in retries] == [("generator_unavailable", 1), ("generator_unavailable", 2)]
    for r in retries:  # identifiers and the error type, never the report
        assert "nodule" not in r.getMessage() and all("nodule" not in str(v) for v in vars(r).values())


def test_bounded_retry_gives_up_after_its_attempts_and_never_retries_permanent_errors(serve):
    down = serve(lambda m, p, b: (503, None, 0))
    policy = RetryPolicy(initial_s=0.01, attempts=2, jitter=0)
    with pytest.raises(GeneratorUnavailable):
        RetryingGenerator(TgiGenerator(down.url), policy, sleep=lambda s: None).generate(
            prompts("x"), GenerationParams(max_new_tokens=8))
    assert len(down.posts("/generate")) == 2

    rejecting = serve(lambda m, p, b: (422, {"error": "too long", "error_type": "validation"}, 0))
    with pytest.raises(GenerationRejected):
        RetryingGenerator(TgiGenerator(rejecting.url), policy, sleep=lambda s: None).generate(
            prompts("x"), GenerationParams(max_new_tokens=8))
    assert len(rejecting.posts("/generate")) == 1


def _cli(args, retries: int):
    env = {"RADBRIDGE_MAX_RETRIES": str(retries), "RADBRIDGE_RETRY_INITIAL_S": "0.01", "RADBRIDGE_RETRY_MAX_S": "0.02",
           "RADBRIDGE_LOG_LEVEL": "ERROR"}
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def test_cli_draft_retries_up_to_max_retries(serve):
    report = FIX / "fhir" / "dr_plain_headings_preliminary.json"
    srv = serve(_down_then_up(2, lambda m, p, b: (200, _generate_ok(b), 0)))
    result = _cli(["draft", "--backend", "tgi", "--url", srv.url, report], retries=2)
    assert result.exit_code == 0, result.output
    [bundle] = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert bundle["resourceType"] == "Bundle"
    assert len(srv.posts("/generate")) == 3

    still_down = serve(_down_then_up(2, lambda m, p, b: (200, _generate_ok(b), 0)))
    result = _cli(["draft", "--backend", "tgi", "--url", still_down.url, report], retries=1)
    assert result.exit_code != 0 and isinstance(result.exception, GeneratorUnavailable)
    assert len(still_down.posts("/generate")) == 2  # 1 + RADBRIDGE_MAX_RETRIES tries, then the command fails


def test_cli_check_retries_an_unreachable_server_but_not_the_silent_adapter_fallback(serve):
    srv = serve(_down_then_up(1, _tgi_with_adapter_effect({"radiology": 0.05})))
    result = _cli(["check", "--backend", "tgi", "--url", srv.url, "--adapter", "radiology"], retries=1)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["ok"] is True

    fallback = serve(_tgi_with_adapter_effect({}))
    result = _cli(["check", "--backend", "tgi", "--url", fallback.url, "--adapter", "radiologyy"], retries=3)
    assert result.exit_code == 1
    assert json.loads(result.stdout.splitlines()[-1])["error"] == "adapter_mismatch"
    assert len(fallback.posts("/generate")) == 3  # base, base again, adapter: one probe each, no retries


def test_cli_eval_retries_the_model_server_up_to_max_retries(serve, tmp_path):
    data = tmp_path / "reports.jsonl"
    data.write_text(json.dumps({"id": "r1", "findings": "Lungs are clear. No effusion.",
                                "impression": "No acute disease."}) + "\n")
    srv = serve(_down_then_up(1, lambda m, p, b: (200, _generate_ok(b), 0)))
    out = tmp_path / "results.json"
    result = _cli(["eval", "--data", data, "--out", out, "--backend", "tgi", "--url", srv.url, "--adapter", "rad"],
                  retries=1)
    assert result.exit_code == 0, result.output
    assert len(srv.posts("/generate")) == 2 and out.is_file()

    still_down = serve(_down_then_up(2, lambda m, p, b: (200, _generate_ok(b), 0)))
    result = _cli(["eval", "--data", data, "--out", out, "--backend", "tgi", "--url", still_down.url], retries=1)
    assert isinstance(result.exception, GeneratorUnavailable) and len(still_down.posts("/generate")) == 2


def test_the_model_api_key_goes_with_every_request_of_both_backends(serve):
    srv = serve(lambda m, p, b: (200, _chat_ok(b) if p.startswith("/v1/chat") else _generate_ok(b), 0))
    TgiGenerator(srv.url, api_key="k-9").generate(prompts("Lungs clear."), GenerationParams(max_new_tokens=4))
    OpenAIGenerator(srv.url, api_key="k-9").generate(prompts("Lungs clear."), GenerationParams(max_new_tokens=4))
    assert srv.auth and set(srv.auth) == {"Bearer k-9"}
    assert "k-9" not in repr(TgiGenerator(srv.url, api_key="k-9"))


def _ended(text: str, end_logprob: float, *, alternative: dict | None = None, finish: str = "eos_token",
           tokens: int = 4) -> dict:
    """A TGI answer asked with top_n_tokens 2 whose last step is the end of turn (or ``finish``)."""
    end = {"id": 2, "text": "<|im_end|>", "logprob": end_logprob, "special": True}
    other = alternative or {"id": 17, "text": " with", "logprob": end_logprob - 0.3, "special": False}
    return {
        "generated_text": text,
        "details": {"finish_reason": finish, "generated_tokens": tokens, "seed": None, "prefill": [],
                    "tokens": [{"id": 5, "text": "x", "logprob": -0.2, "special": False}] * (tokens - 1) + [end],
                    "top_tokens": [[]] * (tokens - 1) + [[end, other]]},
    }


def _end_rule_server(serve, first: dict):
    """Answers the first request with ``first`` and any continuation with ' effusion.' ended surely."""
    def script(m, p, b):
        if b["parameters"].get("top_n_tokens"):
            return 200, first, 0
        return 200, {"generated_text": " effusion.", "details": {
            "finish_reason": "eos_token", "generated_tokens": 3, "seed": None, "prefill": [],
            "tokens": [{"id": 2, "text": "<|im_end|>", "logprob": -0.01, "special": True}]}}, 0
    return serve(script)


def test_tgi_holds_an_unsure_end_once_and_continues_the_draft(serve):
    """+end<pct> on TGI: an end of turn given under the threshold is replaced by the step's next most likely
    token and the draft goes on from the prompt plus the text so far, with the rule off (one hold, as locally)."""
    import math

    srv = _end_rule_server(serve, _ended("Small left pleural", math.log(0.6)))
    gen = TgiGenerator(srv.url, adapter="radiology")
    [out] = gen.generate(prompts("x"), GenerationParams(max_new_tokens=32, end_threshold=0.9))
    assert out.text == "Small left pleural with effusion."
    assert out.finish_reason == "eos_token" and out.generated_tokens == 4 + 3
    first, second = srv.posts("/generate")
    for body in (first, second):
        CONTRACT.validate("GenerateRequest", body)
    prompt = render(prompts("x")[0], "chatml")
    assert first["inputs"] == prompt and first["parameters"]["top_n_tokens"] == 2
    assert second["inputs"] == prompt + "Small left pleural with"
    assert not second["parameters"].get("top_n_tokens") and second["parameters"]["max_new_tokens"] == 32 - 4
    assert second["parameters"]["adapter_id"] == "radiology" and second["parameters"]["do_sample"] is False


@pytest.mark.parametrize("first", [
    _ended("No acute disease.", math.log(0.95)),  # a sure end is final
    _ended("No acute disease", math.log(0.3), finish="stop_sequence"),  # only an end of turn is weighed
    _ended("No acute disease", math.log(0.3), finish="length"),
    _ended("No acute disease.", math.log(0.3),  # the other choice is a special token too: the end stands
           alternative={"id": 1, "text": "<|im_start|>", "logprob": -2.0, "special": True}),
], ids=["sure", "stop-sequence", "length", "special-alternative"])
def test_tgi_keeps_an_end_the_rule_does_not_hold(serve, first):
    srv = _end_rule_server(serve, first)
    [out] = TgiGenerator(srv.url).generate(prompts("x"), GenerationParams(max_new_tokens=32, end_threshold=0.9))
    assert out.text == first["generated_text"] and out.finish_reason == first["details"]["finish_reason"]
    assert len(srv.posts("/generate")) == 1


def test_tgi_end_rule_at_the_token_limit_ends_on_the_held_token(serve):
    srv = _end_rule_server(serve, _ended("Small left pleural", math.log(0.6), tokens=8))
    [out] = TgiGenerator(srv.url).generate(prompts("x"), GenerationParams(max_new_tokens=8, end_threshold=0.9))
    assert out.text == "Small left pleural with" and out.finish_reason == "length" and out.generated_tokens == 8
    assert len(srv.posts("/generate")) == 1


def test_tgi_end_rule_refuses_a_server_without_token_details(serve):
    srv = serve(lambda m, p, b: (200, {"generated_text": "No acute disease.", "details": None}, 0))
    with pytest.raises(GenerationRejected, match="top_n_tokens"):
        TgiGenerator(srv.url).generate(prompts("x"), GenerationParams(max_new_tokens=8, end_threshold=0.9))
