"""Training end to end on a handful of real OpenI reports: a few LoRA steps, a resume, and a reload."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from training.data import OPENI, load_split  # noqa: E402
from training.train import TrainConfig, build_examples, load_model, train  # noqa: E402


def _config(tmp_path: Path, **kw) -> TrainConfig:
    # Two reports, short findings: the point is the mechanics, within the CI budget on 2 cores.
    base = dict(output_dir=str(tmp_path / "run"), limit=2, max_findings_words=12, effective_batch=2, micro_batch=2,
                learning_rate=1e-3, max_steps=1, save_every=1)
    return TrainConfig(**{**base, **kw})


def test_openi_split_is_read_from_shared_and_cleaned():
    assert (OPENI / "reports.jsonl").is_file(), "CI must have ../shared beside the clone"
    valid = load_split("valid")
    assert len(valid) == 327
    assert all(len(r["findings"].split()) >= 10 and len(r["impression"].split()) >= 2 for r in valid)


def test_loss_is_on_the_impression_and_end_of_turn_only(tmp_path):
    cfg = _config(tmp_path, template_id="paper-v1+examples1+exwords5")
    _, tokenizer = load_model(cfg)
    records = load_split("train")[:3]
    examples = build_examples(cfg, records, tokenizer)
    for r, (ids, labels) in zip(records, examples):
        assert len(ids) == len(labels)
        learned = tokenizer.decode([t for t in labels if t != -100])
        assert learned == r["impression"].strip() + "<|im_end|>"
        prompt = tokenizer.decode(ids[: labels.index(next(t for t in labels if t != -100))])
        assert prompt.endswith("<|im_start|>assistant\n")
        assert "Example 1:" in prompt and r["impression"].strip() not in prompt  # never its own answer


def test_few_steps_resume_and_reload(tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    first = train(_config(tmp_path), progress=False)
    assert first["steps"] == 1
    adapter = tmp_path / "run" / "adapter"
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().sum()) > 0 for v in lora_b)  # B starts at zero: it moved
    assert (adapter / "adapter_model.safetensors").stat().st_size < 2_000_000
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and set(cfg["target_modules"]) == {"q_proj", "v_proj"}

    # the same run asked for one more step resumes after step 1 rather than starting over
    again = train(_config(tmp_path, max_steps=2), progress=False)
    assert again["steps"] == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in log] == [1, 2]

    base, tokenizer = load_model(TrainConfig())
    reloaded = PeftModel.from_pretrained(base.get_base_model(), str(tmp_path / "run" / "adapter"))
    ids = tokenizer("Findings: no effusion.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(reloaded(input_ids=ids).logits).all()
