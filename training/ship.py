"""Copy a trained adapter into model/ with its manifest (hashes, prompt template, data, recipe, metrics).

    python -m training.ship --run runs/best --results valid=runs/results/best.json valid_first50=runs/results/best_50.json \
        [--template ID]

The manifest records the full template id the adapter was trained with (findings settings folded in, e.g.
``+fwords60``). ``--template`` serves it with another one; only the wording policy (``+copynormal``, ``+select<k>``) may differ,
because it changes what is done with a completion, not the prompt text.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from radbridge.adapters.model.local import BASE_MODEL_ID, GGUF_FILE, file_sha256, smollm2_folder

from .data import REPO
from .train import TrainConfig

METRIC_KEYS = ("rouge1", "rouge2", "rougeL", "clinical_f1", "laterality_errors", "n", "mean_draft_words",
               "mean_reference_words")


LAYER_KEY = re.compile(r"^(base_model\.model\.model\.layers\.)(\d+)(\..+)$")


def write_full_depth(adapter: Path, dest: Path) -> int:
    """Write ``adapter`` to ``dest`` with LoRA weights for every decoder layer; returns the layers added.

    An adapter trained on the top layers only (PEFT ``layers_to_transform``, always a run up to the last layer,
    so the model's depth is its highest index + 1) loads in PEFT, but TGI drops a target module altogether
    when any layer lacks it. The missing layers get A = B = 0, whose update B·A·x is exactly zero, so the model
    computes the same thing and the folder loads in both.
    """
    from safetensors.torch import load_file, save_file

    config = json.loads((adapter / "adapter_config.json").read_text())
    if not config.get("layers_to_transform"):
        shutil.copyfile(adapter / "adapter_config.json", dest / "adapter_config.json")
        shutil.copyfile(adapter / "adapter_model.safetensors", dest / "adapter_model.safetensors")
        return 0
    n_layers = max(config["layers_to_transform"]) + 1
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    shapes: dict[str, object] = {}
    present: set[tuple[int, str]] = set()
    for key, w in weights.items():
        m = LAYER_KEY.match(key)
        if not m:
            raise ValueError(f"unexpected adapter weight {key}")
        shapes[m.group(3)] = w
        present.add((int(m.group(2)), m.group(3)))
    added = set()
    for layer in range(n_layers):
        for suffix, like in shapes.items():
            if (layer, suffix) not in present:
                weights[f"base_model.model.model.layers.{layer}{suffix}"] = like.new_zeros(like.shape)
                added.add(layer)
    config["layers_to_transform"] = None
    config["layers_pattern"] = None
    (dest / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(dict(sorted(weights.items())), str(dest / "adapter_model.safetensors"), metadata={"format": "pt"})
    return len(added)


def serving_template(trained: str, requested: str | None) -> str:
    """The template id to record for serving: the trained one, or one that builds the very same prompt text."""
    if requested is None or requested == trained:
        return trained
    from radbridge.prompt import PromptTemplate

    a, b = PromptTemplate.from_id(trained), PromptTemplate.from_id(requested)
    if a.without_policy != b.without_policy:
        raise ValueError(f"template {requested} builds other prompts than {trained}, which the adapter was trained on")
    return requested


def ship(run_dir: Path, results: dict[str, Path], dest: Path = REPO / "model", template: str | None = None) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = summary["config"]
    # The full id, findings settings folded in: serving builds exactly the prompts the adapter was trained on.
    template_id = serving_template(TrainConfig.from_dict(cfg).template.id, template)
    adapter = run_dir / "adapter"
    dest.mkdir(parents=True, exist_ok=True)
    write_full_depth(adapter, dest)
    metrics = {}
    for name, path in results.items():
        r = json.loads(Path(path).read_text())
        metrics[name] = {k: r[k] for k in METRIC_KEYS} | {"prompt_template": r.get("meta", {}).get("prompt_template")}
    manifest = {
        "base_model": BASE_MODEL_ID,
        "base_model_file": GGUF_FILE,
        "base_model_sha256": file_sha256(smollm2_folder() / GGUF_FILE),
        "adapter_sha256": file_sha256(dest / "adapter_model.safetensors"),
        "prompt_template": template_id,
        "chat_format": cfg["chat_format"],
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "data": {
            "name": "OpenI (Indiana University chest X-ray reports), findings -> impression",
            "license": "CC BY-NC-ND 4.0 — the adapter is for non-commercial use",
            "split": "Trienes et al. 2023 (train for training, valid for every choice)",
            "train_reports": summary["train_reports"],
            "cleaning": "XrayGPT filter; " + summary["clean_rules"],
            "examples_source": "retrieved at runtime from a JSONL of signed reports (default: OpenI train split)"
            if "+examples" in template_id
            else None,
        },
        "training_config": cfg,
        "training": {k: summary[k] for k in ("steps", "steps_per_epoch", "epochs", "train_seconds",
                                             "seconds_per_epoch", "tokens_per_s", "final_loss")}
        | ({"soup": {"weights": summary["soup"]["weights"], "runs": [
            {"run": r["run"]} | {k: r["summary"][k] for k in ("steps", "epochs", "train_seconds", "tokens_per_s",
                                                             "final_loss", "device", "bf16")}
            for r in summary["soup"]["runs"]]}} if "soup" in summary else {}),
        "metrics": metrics,
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--results", nargs="*", default=[], metavar="NAME=FILE", help="eval results to record")
    ap.add_argument("--dest", type=Path, default=REPO / "model")
    ap.add_argument("--template", help="serving template id, if not the trained one (wording policy only)")
    args = ap.parse_args(argv)
    results = dict(item.split("=", 1) for item in args.results)
    m = ship(args.run, {k: Path(v) for k, v in results.items()}, args.dest, args.template)
    print(json.dumps({k: m[k] for k in ("adapter_sha256", "prompt_template", "metrics")}, indent=1))


if __name__ == "__main__":
    main()
