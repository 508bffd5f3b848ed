"""Training end to end on a handful of real OpenI reports: a few LoRA steps, a resume, and a reload.

Each test loads and trains the real model (20-120 s each on 2 cores), so they belong to the integration tier;
the model-free training tests are in tests/unit/test_training_data.py.
"""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from training.data import load_split
from training.train import TrainConfig, build_examples, load_model, train

# Each test loads the base model one to three times: after the run's first read, copies (see GgufReads).
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("read_gguf_once")]


def _config(tmp_path: Path, **kw) -> TrainConfig:
    # Two reports, short findings: the point is the mechanics, within the CI budget on 2 cores.
    base = dict(output_dir=str(tmp_path / "run"), limit=2, max_findings_words=12, effective_batch=2, micro_batch=2,
                learning_rate=1e-3, max_steps=1, save_every=1)
    return TrainConfig(**{**base, **kw})


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


def test_cached_frozen_layers_give_the_same_loss_as_a_full_pass(tmp_path):
    """Training only the top layers runs the frozen ones once; the loss (and so every gradient) must be the
    one a full forward pass gives, padding included."""
    from training.train import _micro_loss, first_trained_layer, frozen_states

    cfg = _config(tmp_path, lora_layers=4, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    model, tokenizer = load_model(cfg)
    start = first_trained_layer(cfg, model.config.num_hidden_layers)
    assert start == model.config.num_hidden_layers - 4
    trained = {n.split(".layers.")[1].split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {str(i) for i in range(start, start + 4)}
    with torch.no_grad():  # make the adapter non-trivial so a wrong layer split would show
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.02)
    examples = build_examples(cfg, load_split("train")[:3], tokenizer)  # different lengths: padding is exercised
    cache = frozen_states(model, examples, start)
    assert [h.shape[0] for h in cache] == [len(x) for x, _ in examples]
    pad = tokenizer.eos_token_id
    with torch.no_grad():
        full, n_full, _ = _micro_loss(model, examples, pad)
        fast, n_fast, _ = _micro_loss(model, examples, pad, cache, start)
    assert n_full == n_fast > 0
    assert torch.allclose(full, fast, rtol=1e-4), (float(full), float(fast))


def test_top_layer_adapter_ships_full_depth_with_the_same_outputs(tmp_path):
    """TGI needs every layer of a target module; the padded folder must compute exactly what PEFT computed."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from training.ship import write_full_depth

    summary = train(_config(tmp_path, lora_layers=2, target_modules=["q_proj", "down_proj"]), progress=False)
    assert summary["trained_layers_from"] == 28
    assert len(list((tmp_path / "cache").glob("frozen-*.pt"))) == 1  # beside the run, never in the repository
    run_adapter = tmp_path / "run" / "adapter"
    dest = tmp_path / "shipped"
    dest.mkdir()
    assert write_full_depth(run_adapter, dest) == 28
    weights = load_file(str(dest / "adapter_model.safetensors"))
    assert len(weights) == 30 * 2 * 2  # layers x modules x (A, B)
    assert json.loads((dest / "adapter_config.json").read_text())["layers_to_transform"] is None

    ids = None
    outputs = []
    for folder in (run_adapter, dest):
        base, tokenizer = load_model(TrainConfig())
        model = PeftModel.from_pretrained(base.get_base_model(), str(folder)).eval()
        ids = tokenizer("Findings: small left effusion.", return_tensors="pt")["input_ids"] if ids is None else ids
        with torch.no_grad():
            outputs.append(model(input_ids=ids).logits)
    assert torch.equal(outputs[0], outputs[1])


def test_full_update_is_cut_to_a_lora_adapter_that_carries_it(tmp_path):
    """update=full trains whole weights, then writes their change as a LoRA adapter: exact at full rank (k_proj is
    192 x 576), with the errors of lower ranks reported, and the adapter lowers the loss the step lowered."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from training.train import _micro_loss

    cfg = _config(tmp_path, update="full", target_modules=["k_proj"], lora_layers=2, lora_r=192, lora_alpha=96,
                  weight_decay=0.0)
    stages = []
    summary = train(cfg, progress=False, look=lambda stage, model, tokenizer: stages.append(stage))
    assert stages == ["trained", "written"]
    cut = summary["cut"]
    assert (cut["rank"], cut["modules"]) == (192, 2)
    assert cut["largest"] < 1e-3  # full rank: nothing cut
    by_rank = [cut["by_rank"][k]["overall"] for k in ("8", "16", "32", "64", "128")]
    assert by_rank == sorted(by_rank, reverse=True) and by_rank[0] > 0.01
    assert not (tmp_path / "run" / "checkpoint").exists()  # full keeps none
    adapter = tmp_path / "run" / "adapter"
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert {k.split(".")[4] for k in weights} == {"28", "29"} and all("k_proj" in k for k in weights)

    base, tokenizer = load_model(cfg)  # update=full: the plain base model
    examples = build_examples(cfg, load_split("train")[:2], tokenizer)
    pad = tokenizer.eos_token_id
    with torch.no_grad():
        before = _micro_loss(base, examples, pad)[0]
        tuned = PeftModel.from_pretrained(base, str(adapter))
        after = _micro_loss(tuned, examples, pad)[0]
    assert float(after) < float(before) - 0.1


def test_a_run_drafts_the_tune_part_the_way_a_device_call_does(tmp_path):
    """training.gpu_drafts (what DRAFT_TUNE=1 many.sh runs after each run): greedy drafts of tune reports only,
    written beside the run with the template it was trained for."""
    from training.data import valid_part
    from training.gpu_drafts import main as draft_tune

    train(_config(tmp_path, template_id="paper-v1+examples2+exwords20+sim"), progress=False)
    draft_tune([str(tmp_path / "run"), "--limit", "3"])
    got = json.loads((tmp_path / "run" / "tune_drafts.json").read_text())
    assert len(got["uids"]) == len(got["drafts"]) == 3
    assert all(valid_part(uid) == "tune" for uid in got["uids"])  # never the confirm part
    assert got["template"] == "paper-v1+examples2+exwords20+sim+fwords12" and got["device"] == "cpu"
    assert all(isinstance(d, str) and "<|im_end|>" not in d for d in got["drafts"]) and any(got["drafts"])


def test_device_choice(monkeypatch):
    import pytest
    import torch

    from training.train import TrainConfig, pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(TrainConfig()) == ("cpu", False)
    assert pick_device(TrainConfig(bf16=True)) == ("cpu", True)
    with pytest.raises(RuntimeError):
        pick_device(TrainConfig(device="cuda"))
    with pytest.raises(ValueError):
        pick_device(TrainConfig(device="tpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device(TrainConfig()) == ("cuda", True)  # bf16 autocast by default on a GPU
    assert pick_device(TrainConfig(bf16=False)) == ("cuda", False)


def test_bf16_autocast_on_cpu_trains_and_says_so(tmp_path):
    """The 1-epoch CPU config trains with bf16 autocast: the same step, fp32 weights and optimizer, the run summary
    naming the device and precision (its adapter is compared with fp32's by evaluation, not here)."""
    from safetensors.torch import load_file

    summary = train(_config(tmp_path, bf16=True), progress=False)
    assert (summary["device"], summary["bf16"], summary["steps"]) == ("cpu", True, 1)
    assert summary["final_loss"] == summary["final_loss"] and 0 < summary["final_loss"] < 20  # finite
    weights = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert {v.dtype for v in weights.values()} == {torch.float32}
    assert any(float(v.abs().sum()) > 0 for k, v in weights.items() if "lora_B" in k)


def test_soup_of_two_adapters_is_their_weighted_mean_update(tmp_path):
    """training.soup: one rank-2r adapter whose update is exactly w·ΔW1 + (1 − w)·ΔW2, read back through PEFT."""
    from peft import PeftModel

    from lora_helpers import write_random_lora
    from training.soup import soup

    first = write_random_lora(tmp_path / "a", seed=1)
    second = write_random_lora(tmp_path / "b", seed=2)
    config = soup([first, second], [0.3, 0.7], tmp_path / "soup")
    assert (config["r"], config["lora_alpha"]) == (16, 32)

    def deltas(folder: Path) -> list[torch.Tensor]:
        base, _ = load_model(TrainConfig())
        model = PeftModel.from_pretrained(base.get_base_model(), str(folder)).eval()
        layers = model.base_model.model.model.layers
        return [layers[i].self_attn.v_proj.get_delta_weight("default") for i in (0, 29)]

    d1, d2, ds = deltas(first), deltas(second), deltas(tmp_path / "soup")
    for a, b, s in zip(d1, d2, ds):
        assert not torch.allclose(a, b)
        torch.testing.assert_close(s, 0.3 * a + 0.7 * b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="weight"):
        soup([first, second], [1.5, -0.5], tmp_path / "bad")
    with pytest.raises(ValueError, match="sum to 1"):
        soup([first, second], [0.5, 0.6], tmp_path / "bad")


def _v_proj_deltas(folder: Path) -> list[torch.Tensor]:
    from peft import PeftModel

    base, _ = load_model(TrainConfig())
    model = PeftModel.from_pretrained(base.get_base_model(), str(folder)).eval()
    layers = model.base_model.model.model.layers
    return [layers[i].self_attn.v_proj.get_delta_weight("default") for i in (0, 29)]


def test_soup_cut_by_rank_is_the_best_low_rank_approximation_of_the_mean(tmp_path):
    """training.soup --rank: three adapters' mean update (rank 24) cut to rank 12 by SVD is the Eckart-Young best
    rank-12 approximation of the exact mean, and the error it reports is the one measured; an update whose rank
    fits (two copies of one adapter) is kept exactly."""
    from lora_helpers import write_random_lora
    from training.soup import soup

    adapters = [write_random_lora(tmp_path / f"a{seed}", seed=seed) for seed in (1, 2, 3)]
    weights = [0.5, 0.3, 0.2]
    exact = soup(adapters, weights, tmp_path / "exact")
    cut = soup(adapters, weights, tmp_path / "cut", rank=12)
    assert (exact["r"], exact["lora_alpha"], cut["r"], cut["lora_alpha"]) == (24, 48, 12, 24)
    errors = []
    for full, low in zip(_v_proj_deltas(tmp_path / "exact"), _v_proj_deltas(tmp_path / "cut")):
        u, s, vh = torch.linalg.svd(full, full_matrices=False)
        torch.testing.assert_close(low, (u[:, :12] * s[:12]) @ vh[:12], rtol=1e-4, atol=1e-6)
        errors.append(float(torch.linalg.matrix_norm(full - low) / torch.linalg.matrix_norm(full)))
    assert 0 < max(errors) <= cut["soup_rank_error"] + 1e-6  # the report covers every module, these two included

    from safetensors.torch import load_file

    same = soup([adapters[0], adapters[0]], [0.5, 0.5], tmp_path / "same", rank=8)
    assert (same["r"], same["lora_alpha"]) == (8, 16) and same["soup_rank_error"] < 1e-5
    one, kept = (load_file(str(folder / "adapter_model.safetensors")) for folder in (adapters[0], tmp_path / "same"))
    for key in (k for k in one if ".lora_A." in k):
        key_b = key.replace(".lora_A.", ".lora_B.")  # same r and alpha: the updates are B @ A alike
        torch.testing.assert_close(kept[key_b] @ kept[key], one[key_b] @ one[key], rtol=1e-4, atol=1e-6)


def test_soup_of_two_runs_writes_a_run_that_ship_takes(tmp_path):
    from lora_helpers import write_random_lora
    from training.ship import ship
    from training.soup import soup_runs

    runs = []
    for seed, epochs in ((1, 1), (2, 2)):
        run = tmp_path / f"run{epochs}"
        write_random_lora(run / "adapter", seed=seed)
        cfg = asdict(TrainConfig(output_dir=str(run), epochs=epochs, template_id="paper-v1+examples2+sim",
                                 max_findings_words=60))
        (run / "summary.json").write_text(json.dumps({
            "config": cfg, "train_reports": 10, "clean_rules": "as released", "prompt_template": "x", "steps": epochs,
            "steps_per_epoch": 1, "epochs": epochs, "train_seconds": 1.0, "seconds_per_epoch": 1.0,
            "tokens_per_s": 5.0, "final_loss": 1.0, "device": "cpu", "bf16": False}))
        runs.append(run)
    summary = soup_runs(runs, [0.5, 0.5], tmp_path / "soup", dtype="float16")
    assert (summary["steps"], summary["soup"]["weights"], summary["soup"]["rank"]) == (3, [0.5, 0.5], 16)
    manifest = ship(tmp_path / "soup", {}, tmp_path / "model", "paper-v1+examples2+sim+fwords60+select5+len3")
    assert manifest["prompt_template"] == "paper-v1+examples2+sim+fwords60+select5+len3"
    assert [r["epochs"] for r in manifest["training"]["soup"]["runs"]] == [1, 2]
    assert json.loads((tmp_path / "model" / "adapter_config.json").read_text())["r"] == 16  # 2 x 8

    # A GPU run of the same recipe (another micro-batch split, length-bucketed order, bf16) goes in the soup ...
    cfg = json.loads((runs[1] / "summary.json").read_text())
    cfg["config"] |= {"micro_batch": 32, "length_buckets": 8, "bf16": True, "device": "cuda", "num_threads": 8}
    (runs[1] / "summary.json").write_text(json.dumps(cfg))
    assert soup_runs(runs, [0.5, 0.5], tmp_path / "gpu")["soup"]["rank"] == 16
    # ... a run of another recipe does not.
    cfg["config"]["learning_rate"] = 1.0
    (runs[1] / "summary.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="learning_rate"):
        soup_runs(runs, [0.5, 0.5], tmp_path / "bad")
