"""The TGI-protocol model server's HTTP behaviour, on a fake model: validation, defaults, fallback, 429, batching."""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from radbridge.adapters.model.local import RowResult, TokenInfo
from radbridge.adapters.model.server import ServerConfig, create_app, parse_adapters
from tgi_contract import load_contract

CONTRACT = load_contract()


class FakeTokenizer:
    """One token per whitespace-separated word."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text.split())))}

    def decode(self, ids):
        return " ".join("w" for _ in ids)


class FakeModel:
    """Stands in for LocalModel: echoes which adapter answered; can be held to simulate a busy model."""

    def __init__(self, adapters=("radiology",)):
        self.adapter_dirs = {a: f"/adapters/{a}" for a in adapters}
        self.base_sha256 = "0" * 64
        self.loaded = False
        self.tokenizer = FakeTokenizer()
        self.batches: list[list] = []
        self.samplings = []
        self.release = threading.Event()
        self.release.set()

    def load(self):
        self.loaded = True
        return self

    def chat_text(self, messages):
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"

    def generate(self, rows, sampling, on_token=None):  # reports no tokens as it goes: the stream replays them
        self.release.wait(10)
        self.batches.append(list(rows))
        self.samplings.append(sampling)
        out = []
        for r in rows:
            text = f"answer from {r.adapter or 'base'}"
            toks = [TokenInfo(i + 10, "w", -0.5, False) for i in range(min(3, r.max_new_tokens))]
            prefill = [TokenInfo(1, "p", None), TokenInfo(2, "q", -1.5)] if r.prefill_details else []
            # step i's most likely tokens: the chosen one, then runners-up with ids 100 * (i + 1) + k
            top = [[t] + [TokenInfo(100 * (i + 1) + k, "x", -1.0 - k) for k in range(1, r.top_n_tokens)]
                   for i, t in enumerate(toks)] if r.top_n_tokens else []
            out.append(RowResult(text, "length", toks, input_length=5, prefill=prefill, top_tokens=top))
        return out


@pytest.fixture
def model():
    return FakeModel()


@pytest.fixture
def client(model):
    app = create_app(model=model, config=ServerConfig(max_total_tokens=64, max_concurrent_requests=2, batch_wait_ms=1))
    with TestClient(app) as c:
        yield c


def valid(resp, method: str, path: str) -> dict:
    body = resp.json()
    CONTRACT.validate_response(method, path, resp.status_code, body)
    return body


def test_info_health_models_follow_the_spec(client):
    info = valid(client.get("/info"), "GET", "/info")
    assert info["max_total_tokens"] == 64 and info["max_stop_sequences"] == 4
    health = client.get("/health")
    assert health.status_code == 200 and health.content == b""
    valid(client.get("/v1/models"), "GET", "/v1/models")


def test_generate_with_adapter_and_details(client, model):
    req = {"inputs": "Findings: lungs clear", "parameters": {"adapter_id": "radiology", "details": True, "max_new_tokens": 3, "decoder_input_details": True}}
    CONTRACT.validate("GenerateRequest", req)
    resp = client.post("/generate", json=req)
    body = valid(resp, "POST", "/generate")
    assert body["generated_text"] == "answer from radiology"
    assert body["details"]["generated_tokens"] == 3 and body["details"]["prefill"][1]["logprob"] == -1.5
    assert resp.headers["x-generated-tokens"] == "3"
    assert model.batches[-1][0].max_new_tokens == 3 and not model.samplings[-1].do_sample


def test_defaults_follow_the_server_not_the_spec(client, model):
    # with "parameters": details defaults to false (the spec says true); without it, the router samples
    body = valid(client.post("/generate", json={"inputs": "a b", "parameters": {"max_new_tokens": 2}}), "POST", "/generate")
    assert body["details"] is None and not model.samplings[-1].do_sample
    valid(client.post("/generate", json={"inputs": "a b"}), "POST", "/generate")
    assert model.samplings[-1].do_sample
    assert model.batches[-1][0].max_new_tokens == 64 - 2  # max_total_tokens - input tokens


def test_unknown_adapter_silently_uses_the_base_model(client, model, caplog):
    with caplog.at_level(logging.WARNING, logger="radbridge.adapters.model.server"):
        body = valid(
            client.post("/generate", json={"inputs": "secret findings text", "parameters": {"adapter_id": "nope", "max_new_tokens": 2}}),
            "POST",
            "/generate",
        )
    assert body["generated_text"] == "answer from base"  # TGI's pitfall, reproduced on purpose
    assert "nope" in caplog.text and "secret" not in caplog.text


@pytest.mark.parametrize(
    "params,inputs,needle",
    [
        ({"max_new_tokens": 0}, "a", "max_new_tokens"),
        ({"max_new_tokens": 2}, "", "cannot be empty"),
        ({"max_new_tokens": 2, "stop": ["a", "b", "c", "d", "e"]}, "a", "up to 4 stop sequences"),
        ({"max_new_tokens": 10}, " ".join(["w"] * 60), "must be <= 64"),
        ({"max_new_tokens": 2, "temperature": 0.0, "do_sample": True}, "a", "temperature"),
    ],
)
def test_validation_errors_are_422(client, params, inputs, needle):
    resp = client.post("/generate", json={"inputs": inputs, "parameters": params})
    assert resp.status_code == 422
    body = valid(resp, "POST", "/generate")
    assert body["error_type"] == "validation" and needle in body["error"]


def test_malformed_body_is_a_422_error_response(client):
    resp = client.post("/generate", json={"parameters": {}})
    assert resp.status_code == 422
    valid(resp, "POST", "/generate")


def test_stream_events_and_stream_validation(client):
    resp = client.post("/generate_stream", json={"inputs": "a b", "parameters": {"max_new_tokens": 3, "details": True}})
    events = [json.loads(line[5:]) for line in resp.text.splitlines() if line.startswith("data:")]
    for e in events:
        CONTRACT.validate("StreamResponse", e)
    assert [e["index"] for e in events] == [1, 2, 3]
    assert events[-1]["generated_text"] == "answer from base" and events[-1]["details"]["input_length"] == 2
    assert [e["top_tokens"] for e in events] == [[], [], []]  # none asked for
    bad = client.post("/generate_stream", json={"inputs": "a", "parameters": {"decoder_input_details": True}})
    [err] = [json.loads(line[5:]) for line in bad.text.splitlines() if line.startswith("data:")]
    CONTRACT.validate("ErrorResponse", err)
    assert err["error_type"] == "validation"


class StreamingModel(FakeModel):
    """Reports each token as it is chosen, like LocalModel; holds after the first until ``gate`` is set."""

    def __init__(self, fail_after_first=False):
        super().__init__()
        self.gate = threading.Event()
        self.finished = False
        self.fail_after_first = fail_after_first

    def generate(self, rows, sampling, on_token=None):
        out = FakeModel.generate(self, rows, sampling)
        for index, result in enumerate(out):
            on_token(index, result.tokens[0], False, result.top_tokens[0] if result.top_tokens else [])
        self.gate.wait(10)
        if self.fail_after_first:
            raise RuntimeError("device lost")
        for index, result in enumerate(out):
            for n, token in enumerate(result.tokens[1:], start=2):
                on_token(index, token, n == len(result.tokens), result.top_tokens[n - 1] if result.top_tokens else [])
        self.finished = True
        return out


def _stream_events(model, request):
    app = create_app(model=model, config=ServerConfig(max_total_tokens=64, batch_wait_ms=1))
    events = []
    with TestClient(app) as c, c.stream("POST", "/generate_stream", json=request) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:"):
                events.append((json.loads(line[5:]), model.finished))
                model.gate.set()
    return events


def test_stream_sends_each_token_while_the_batch_is_still_generating():
    model = StreamingModel()
    events = _stream_events(model, {"inputs": "a b", "parameters": {"max_new_tokens": 3, "details": True}})
    for e, _ in events:
        CONTRACT.validate("StreamResponse", e)
    # The first token reached the client while the model was still held inside generate.
    assert [e["index"] for e, _ in events] == [1, 2, 3] and events[0][1] is False and model.finished
    assert [e["generated_text"] for e, _ in events] == [None, None, "answer from base"]
    assert events[-1][0]["details"]["finish_reason"] == "length"


@pytest.mark.parametrize("live", [True, False], ids=["reported-as-chosen", "replayed-from-result"])
def test_stream_events_carry_their_own_steps_top_tokens(live, model):
    request = {"inputs": "a b", "parameters": {"max_new_tokens": 3, "top_n_tokens": 2}}
    if live:
        events = [e for e, _ in _stream_events(StreamingModel(), request)]
    else:
        app = create_app(model=model, config=ServerConfig(max_total_tokens=64, batch_wait_ms=1))
        with TestClient(app) as c:
            text = c.post("/generate_stream", json=request).text
        events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    for e in events:
        CONTRACT.validate("StreamResponse", e)
    assert [[t["id"] for t in e["top_tokens"]] for e in events] == [[10, 101], [11, 201], [12, 301]]
    assert [e["top_tokens"][1]["logprob"] for e in events] == [-2.0, -2.0, -2.0]


def test_stream_failing_mid_generation_ends_with_an_error_event():
    model = StreamingModel(fail_after_first=True)
    events = [e for e, _ in _stream_events(model, {"inputs": "a", "parameters": {"max_new_tokens": 3}})]
    assert events[0]["index"] == 1 and events[0]["generated_text"] is None
    CONTRACT.validate("ErrorResponse", events[1])
    assert events[1]["error_type"] == "generation" and len(events) == 2


def test_chat_stream_sends_chunks_while_generating_then_usage_and_done():
    model = StreamingModel()
    app = create_app(model=model, config=ServerConfig(max_total_tokens=64, batch_wait_ms=1))
    req = {"model": "radiology", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "temperature": 0,
           "stream": True, "stream_options": {"include_usage": True}}
    CONTRACT.validate("ChatRequest", req)
    chunks = []
    with TestClient(app) as c, c.stream("POST", "/v1/chat/completions", json=req) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data:"):
                chunks.append((line[5:].strip(), model.finished))
                model.gate.set()
    assert chunks[-1][0] == "[DONE]"
    events = [json.loads(data) for data, _ in chunks[:-1]]
    for e in events:
        CONTRACT.validate("ChatCompletionChunk", e)
    assert chunks[0][1] is False and model.finished  # the first chunk left while the model was held
    assert [e["choices"][0]["delta"]["content"] for e in events[:3]] == ["w", "w", "w"]
    assert [e["choices"][0]["finish_reason"] for e in events[:3]] == [None, None, "length"]
    assert events[3]["choices"] == [] and events[3]["usage"]["completion_tokens"] == 3
    assert model.batches[-1][0].adapter == "radiology"


def test_chat_completion_uses_model_as_adapter(client, model):
    req = {"model": "radiology", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "temperature": 0, "logprobs": True}
    CONTRACT.validate("ChatRequest", req)
    body = valid(client.post("/v1/chat/completions", json=req), "POST", "/v1/chat/completions")
    assert body["choices"][0]["message"]["content"] == "answer from radiology"
    assert body["choices"][0]["finish_reason"] == "length" and len(body["choices"][0]["logprobs"]["content"]) == 3
    assert not model.samplings[-1].do_sample
    body = valid(client.post("/v1/chat/completions", json={**req, "model": "tgi"}), "POST", "/v1/chat/completions")
    assert body["choices"][0]["message"]["content"] == "answer from base"


def test_overloaded_server_answers_429(client, model):
    model.release.clear()  # the model is busy; requests pile up in flight
    req = {"inputs": "a", "parameters": {"max_new_tokens": 1}}
    with ThreadPoolExecutor(3) as pool:
        first = [pool.submit(client.post, "/generate", json=req) for _ in range(2)]
        while client.app.state.service.in_flight < 2:
            threading.Event().wait(0.01)
        third = client.post("/generate", json=req)
        model.release.set()
        assert all(f.result().status_code == 200 for f in first)
    assert third.status_code == 429
    assert valid(third, "POST", "/generate")["error_type"] == "overloaded"


def test_concurrent_requests_are_micro_batched(model):
    app = create_app(model=model, config=ServerConfig(max_batch_size=4, batch_wait_ms=300))
    with TestClient(app) as c, ThreadPoolExecutor(4) as pool:
        reqs = [{"inputs": f"n{i}", "parameters": {"max_new_tokens": 1 + i, "adapter_id": "radiology" if i % 2 else None}} for i in range(4)]
        results = list(pool.map(lambda r: c.post("/generate", json=r), reqs))
    assert all(r.status_code == 200 for r in results)
    assert [len(b) for b in model.batches] == [4]  # one forward batch, mixed adapters and lengths
    assert sorted(r.adapter or "" for r in model.batches[0]) == ["", "", "radiology", "radiology"]


def test_parse_adapters_uses_tgi_syntax():
    assert parse_adapters("radiology=/a/b, other=/c") == {"radiology": "/a/b", "other": "/c"}
    assert parse_adapters("") == {}
    with pytest.raises(ValueError):
        parse_adapters("org/hub-adapter")


# ---- `radbridge serve-model`, the one command line (`python -m radbridge.adapters.model.server` runs it too) ----


@pytest.fixture
def serve_calls(monkeypatch):
    """The command's arguments to ``serve`` and its logging level, without starting a server."""
    import radbridge.adapters.model.server as server
    import radbridge.cli as cli

    for name in [k for k in os.environ if k.startswith("RADBRIDGE_") or k == "LORA_ADAPTERS"]:
        monkeypatch.delenv(name)
    calls = []
    monkeypatch.setattr(server, "serve", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setattr(cli, "_configure_logging", lambda level: calls.append(("logging", level)))
    return calls


def serve_model(*args):
    from typer.testing import CliRunner

    from radbridge.cli import app

    return CliRunner().invoke(app, ["serve-model", *map(str, args)])


def test_serve_model_reads_settings_at_its_edge(serve_calls, monkeypatch):
    monkeypatch.setenv("RADBRIDGE_LOCAL_BATCH_SIZE", "3")
    monkeypatch.setenv("RADBRIDGE_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("RADBRIDGE_NO_ADAPTER", "true")
    result = serve_model("--port", 9123)
    assert result.exit_code == 0, result.output
    logging_call, ((host, port, adapters), kwargs) = serve_calls
    assert logging_call == ("logging", "WARNING")
    assert (host, port, adapters) == ("127.0.0.1", 9123, {})
    assert kwargs == dict(max_batch_size=3, batch_wait_ms=5.0, max_concurrent_requests=128, max_total_tokens=2048,
                          threads=None, log_level="WARNING", api_key=None)


def test_serve_model_options_override_settings(serve_calls, monkeypatch, tmp_path):
    monkeypatch.setenv("RADBRIDGE_LOCAL_BATCH_SIZE", "3")
    monkeypatch.setenv("RADBRIDGE_LOG_LEVEL", "WARNING")
    result = serve_model("--host", "0.0.0.0", "--lora-adapters", f"rad={tmp_path}", "--max-batch-size", 5,
                         "--batch-wait-ms", 20, "--max-concurrent-requests", 7, "--max-total-tokens", 512,
                         "--threads", 1, "--log-level", "debug")
    assert result.exit_code == 0, result.output
    logging_call, ((host, _, adapters), kwargs) = serve_calls
    assert logging_call == ("logging", "debug") and host == "0.0.0.0" and adapters == {"rad": str(tmp_path)}
    assert kwargs == dict(max_batch_size=5, batch_wait_ms=20.0, max_concurrent_requests=7, max_total_tokens=512,
                          threads=1, log_level="debug", api_key=None)


def test_serve_model_adapters_from_tgi_variable_or_settings(serve_calls, monkeypatch, tmp_path):
    from radbridge.settings import SHIPPED_MODEL_DIR

    def adapters_served(*args) -> dict:
        serve_calls.clear()
        result = serve_model(*args)
        assert result.exit_code == 0, result.output
        return serve_calls[-1][0][2]

    assert adapters_served() == {"radiology": str(SHIPPED_MODEL_DIR)}
    # the service's env file names the adapter served by a tgi server: not a folder, so the shipped one is served
    monkeypatch.setenv("RADBRIDGE_BACKEND", "tgi")
    monkeypatch.setenv("RADBRIDGE_ADAPTER", "radiology")
    assert adapters_served() == {"radiology": str(SHIPPED_MODEL_DIR)}
    (tmp_path / "adapter_config.json").write_text("{}")
    monkeypatch.setenv("RADBRIDGE_BACKEND", "local")
    monkeypatch.setenv("RADBRIDGE_ADAPTER", str(tmp_path))
    assert adapters_served() == {"radiology": str(tmp_path)}
    monkeypatch.setenv("LORA_ADAPTERS", "a=/x,b=/y")
    assert adapters_served() == {"a": "/x", "b": "/y"}


def test_serve_model_refuses_an_adapter_folder_that_is_not_peft(serve_calls, monkeypatch, tmp_path):
    monkeypatch.setenv("RADBRIDGE_ADAPTER", str(tmp_path))
    result = serve_model()
    assert result.exit_code != 0 and "adapter_config.json" in str(result.exception)
    assert not [call for call in serve_calls if call[0] != "logging"]


def test_api_key_is_required_on_every_route_but_health(model):
    app = create_app(model=model, config=ServerConfig(max_total_tokens=64, batch_wait_ms=1, api_key="k-123"))
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        body = {"inputs": "hello", "parameters": {"max_new_tokens": 2}}
        assert c.post("/generate", json=body).status_code == 401
        assert c.post("/generate", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/info").status_code == 401
        ok = c.post("/generate", json=body, headers={"Authorization": "Bearer k-123"})
        assert ok.status_code == 200 and "generated_text" in ok.json()


def test_serving_off_loopback_without_a_key_is_refused():
    from radbridge.adapters.model.server import serve

    with pytest.raises(ValueError, match="without an API key"):
        serve("0.0.0.0", 0, {})
