"""The real model behind the TGI-protocol server, driven by the real TGI and OpenAI clients.

Every request the clients send and every response the server gives is checked against TGI's published
OpenAPI schemas (``../shared/reference/tgi-openapi.json``).
"""

from __future__ import annotations

import json

import httpx
import pytest
from huggingface_hub import InferenceClient

from radbridge import samples
from radbridge.adapters.model.local import BASE_MODEL_ID, LocalModel, RowRequest, Sampling
from radbridge.adapters.model.openai import OpenAIGenerator
from radbridge.adapters.model.tgi import TgiGenerator
from radbridge.adapters.model.server import ServerConfig, create_app
from tgi_contract import load_contract
from radbridge.domain import GenerationParams
from radbridge.errors import AdapterMismatch, GenerationRejected, GeneratorUnavailable
from radbridge.prompt import DEFAULT_TEMPLATE, STOP_SEQUENCES, build, render

from lora_helpers import write_random_lora
from server_helpers import Recorder, ThreadedServer, check_exchange, free_port, wait_until_serving

pytestmark = pytest.mark.integration

PARAMS = GenerationParams(max_new_tokens=6)
PROMPTS = [
    build(DEFAULT_TEMPLATE, "Heart size is normal. The lungs are clear. No pleural effusion."),
    build(DEFAULT_TEMPLATE, "Left lower lobe opacity, likely pneumonia. Small left pleural effusion."),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    adapter = write_random_lora(tmp_path_factory.mktemp("lora") / "radiology")
    model = LocalModel({"radiology": adapter}, batch_size=4, threads=1)
    recorder = Recorder(create_app(model=model, config=ServerConfig(max_batch_size=4, batch_wait_ms=20)))
    with ThreadedServer(recorder) as srv:
        srv.model = model
        srv.recorder = recorder
        yield srv


@pytest.fixture(autouse=True)
def every_exchange_follows_the_spec(server):
    start = len(server.recorder.exchanges)
    yield
    server.recorder.settle()
    contract = load_contract()
    for ex in server.recorder.exchanges[start:]:
        check_exchange(contract, ex)


def test_tgi_generator_matches_the_in_process_model(server):
    gen = TgiGenerator(server.url, adapter="radiology", concurrency=2)
    out = gen.generate(PROMPTS, PARAMS)
    stops = STOP_SEQUENCES["chatml"]
    direct = server.model.generate([RowRequest(render(p), PARAMS.max_new_tokens, "radiology", stops) for p in PROMPTS])
    assert [g.text for g in out] == [r.text.strip() for r in direct]
    assert all(g.text and g.finish_reason in ("length", "eos_token") for g in out)
    assert [g.generated_tokens for g in out] == [len(r.tokens) for r in direct]


def test_tgi_end_rule_gives_the_in_process_rules_drafts(server):
    """+end<pct> through TGI's API (top_n_tokens, then a continuation request; adapters/model/tgi.py) writes the
    same drafts as the local backend's logits processor, on real OpenI findings, with at least one end held."""
    reports = [r for r in samples.openi_reports() if len(r.get("findings", "").split()) >= 10][:4]
    prompts = [build(DEFAULT_TEMPLATE, r["findings"]) for r in reports]
    params = GenerationParams(max_new_tokens=96, end_threshold=0.9)
    remote = TgiGenerator(server.url, adapter="radiology", concurrency=2).generate(prompts, params)
    rows = [RowRequest(render(p), 96, "radiology", STOP_SEQUENCES["chatml"]) for p in prompts]
    greedy = server.model.generate(rows)
    held = server.model.generate(rows, Sampling(end_threshold=0.9))
    assert any(g.finish_reason == "eos_token" and len(h.tokens) > len(g.tokens) for g, h in zip(greedy, held))
    assert [g.text for g in remote] == [h.text.strip() for h in held]
    assert [g.generated_tokens for g in remote] == [len(h.tokens) for h in held]


def test_top_n_tokens_are_the_models_most_likely_tokens(server):
    request = {"inputs": render(PROMPTS[0]), "parameters": {"max_new_tokens": 4, "details": True, "top_n_tokens": 3,
                                                          "adapter_id": "radiology"}}
    details = httpx.post(f"{server.url}/generate", json=request, timeout=120).json()["details"]
    assert len(details["top_tokens"]) == len(details["tokens"]) == details["generated_tokens"]
    for chosen, top in zip(details["tokens"], details["top_tokens"]):
        assert len(top) == 3 and [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert top[0]["id"] == chosen["id"] and top[0]["logprob"] == pytest.approx(chosen["logprob"])  # greedy
    too_many = dict(request, parameters=dict(request["parameters"], top_n_tokens=6))
    answer = httpx.post(f"{server.url}/generate", json=too_many, timeout=120)
    assert answer.status_code == 422 and "top_n_tokens" in answer.json()["error"]


def test_stream_gives_the_same_tokens_as_generate_one_event_each(server):
    request = {"inputs": render(PROMPTS[1]), "parameters": {"max_new_tokens": 6, "details": True, "top_n_tokens": 2,
                                                          "adapter_id": "radiology"}}
    whole = httpx.post(f"{server.url}/generate", json=request, timeout=120).json()
    with httpx.stream("POST", f"{server.url}/generate_stream", json=request, timeout=120) as resp:
        events = [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]
    assert [e["token"]["id"] for e in events] == [t["id"] for t in whole["details"]["tokens"]]
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    assert [e["generated_text"] for e in events[:-1]] == [None] * (len(events) - 1)
    assert events[-1]["generated_text"] == whole["generated_text"]
    assert events[-1]["details"]["finish_reason"] == whole["details"]["finish_reason"]
    # Same greedy choice, same log-probabilities: streaming reads them from the same step.
    assert [round(e["token"]["logprob"], 4) for e in events] == [round(t["logprob"], 4) for t in whole["details"]["tokens"]]
    # Each event carries its own step's most likely tokens, as TGI's do (the tgi client's end rule reads them).
    assert [[t["id"] for t in e["top_tokens"]] for e in events] == [[t["id"] for t in step]
                                                                     for step in whole["details"]["top_tokens"]]
    assert all(len(e["top_tokens"]) == 2 and e["top_tokens"][0]["id"] == e["token"]["id"] for e in events)


def test_huggingface_client_streams_text_and_chat(server):
    client = InferenceClient(server.url, timeout=120)
    prompt = render(PROMPTS[0])
    whole = client.text_generation(prompt, max_new_tokens=5, details=True, adapter_id="radiology")
    streamed = list(client.text_generation(prompt, max_new_tokens=5, details=True, stream=True, adapter_id="radiology"))
    assert [s.token.id for s in streamed] == [t.id for t in whole.details.tokens]
    assert streamed[-1].generated_text == whole.generated_text
    messages = [{"role": "system", "content": PROMPTS[0].system}, {"role": "user", "content": PROMPTS[0].user}]
    reply = client.chat_completion(messages, model="radiology", max_tokens=5, temperature=0)
    chunks = list(client.chat_completion(messages, model="radiology", max_tokens=5, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason


def test_chat_endpoint_sees_the_same_prompt_as_the_raw_endpoint(server):
    raw = TgiGenerator(server.url, adapter="radiology").generate(PROMPTS[:1], PARAMS)
    chat = OpenAIGenerator(server.url, adapter="radiology").generate(PROMPTS[:1], PARAMS)
    assert [g.text for g in chat] == [g.text for g in raw]


def test_check_passes_for_the_loaded_adapter(server):
    gen = TgiGenerator(server.url, adapter="radiology")
    gen.check()
    assert gen.info.base_model == BASE_MODEL_ID
    assert gen.info.server_version.startswith("radbridge-model-server")
    OpenAIGenerator(server.url, adapter="radiology").check()


def test_check_detects_an_adapter_the_server_does_not_have(server):
    # The server answers happily with the base model (as TGI does); only the check notices.
    gen = TgiGenerator(server.url, adapter="radiology-v2")
    assert gen.generate(PROMPTS[:1], GenerationParams(max_new_tokens=2))[0].text
    with pytest.raises(AdapterMismatch, match="radiology-v2"):
        gen.check()
    with pytest.raises(AdapterMismatch):
        OpenAIGenerator(server.url, adapter="radiology-v2").check()


def test_too_many_tokens_is_rejected_without_retry(server):
    before = sum(1 for e in server.recorder.exchanges if e.path == "/generate")
    with pytest.raises(GenerationRejected):
        TgiGenerator(server.url).generate(PROMPTS[:1], GenerationParams(max_new_tokens=5000))
    assert sum(1 for e in server.recorder.exchanges if e.path == "/generate") == before + 1


def test_stopped_server_is_unavailable():
    gen = TgiGenerator(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(GeneratorUnavailable):
        gen.generate(PROMPTS[:1], PARAMS)
    with pytest.raises(GeneratorUnavailable):
        OpenAIGenerator(gen.url).check()


def test_module_entry_point_serves_tgi_protocol(tmp_path):
    """``python -m radbridge.adapters.model.server`` (the ``radbridge serve-model`` command) with TGI's
    LORA_ADAPTERS syntax, as deploy scripts run it."""
    import os
    import subprocess
    import sys

    import httpx

    adapter = write_random_lora(tmp_path / "rad")
    port = free_port()
    env = {**os.environ, "LORA_ADAPTERS": f"rad={adapter}"}
    cmd = [sys.executable, "-m", "radbridge.adapters.model.server", "--port", str(port), "--threads", "1", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{url}/health", proc, 300, "model server", lambda: proc.stderr.read().decode())
        contract = load_contract()
        contract.validate("Info", httpx.get(f"{url}/info", timeout=10).json())
        gen = TgiGenerator(url, adapter="rad")
        gen.check()
        [out] = gen.generate(PROMPTS[:1], GenerationParams(max_new_tokens=2))
        assert out.generated_tokens == 2 or out.finish_reason == "eos_token"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
