"""Average the weight updates of two LoRA adapters of the same base model into one adapter (a "soup").

    python -m training.soup training/candidates/all30-1ep training/candidates/all30-2ep --weight 0.5 \
        --dtype float16 --out runs/soup50-fp16

Two adapters trained from the same base each add ``s · B·A`` to a weight matrix (``s`` = lora_alpha / r). Their
weighted mean ``s · (w·B1·A1 + (1 − w)·B2·A2)`` is itself a LoRA update of rank r1 + r2: stack the A matrices
(rows) and the scaled B matrices (columns), with lora_alpha doubled so that the scaling stays ``s``. Nothing is
approximated, so serving the soup costs one generation (one adapter, mergeable into the base weights), unlike
running both adapters and choosing between their drafts.

Both adapters must have the same targets, rank, alpha and no per-module rank or alpha patterns; the result is
written in the first adapter's dtype. The command takes two training runs (``adapter/`` and ``summary.json``
each, as ``training.train`` writes them) and writes a run folder that ``training.ship --run`` takes: the soup in
``adapter/`` and a ``summary.json`` with the recipe they share, both runs' summaries and the weight.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SAME = ("r", "lora_alpha", "target_modules", "layers_to_transform", "use_rslora", "use_dora", "peft_type")


def soup(first: Path, second: Path, weight: float, out: Path, dtype: str | None = None) -> dict:
    """Write the soup of ``first`` (weight ``weight``) and ``second`` (1 − weight) to ``out``; returns its config.
    ``dtype`` ("float16", "float32"): the weights' type on disk, else the first adapter's."""
    import torch
    from safetensors.torch import load_file, save_file

    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be within [0, 1], not {weight}")
    configs = [json.loads((a / "adapter_config.json").read_text()) for a in (first, second)]
    for key in SAME:
        a, b = (c.get(key) for c in configs)
        if (sorted(a) if isinstance(a, list) else a) != (sorted(b) if isinstance(b, list) else b):
            raise ValueError(f"adapters differ in {key}: {a!r} vs {b!r}")
    if any(c.get("rank_pattern") or c.get("alpha_pattern") or c.get("use_rslora") for c in configs):
        raise ValueError("adapters with rank_pattern, alpha_pattern or rsLoRA scaling are not supported")
    tensors = [load_file(str(a / "adapter_model.safetensors")) for a in (first, second)]
    if set(tensors[0]) != set(tensors[1]):
        raise ValueError("adapters have different weight names")
    dtype = getattr(torch, dtype) if dtype else next(iter(tensors[0].values())).dtype
    merged = {}
    for key, t1 in tensors[0].items():
        t1, t2 = t1.float(), tensors[1][key].float()
        if ".lora_A." in key:
            merged[key] = torch.cat([t1, t2], dim=0)
        elif ".lora_B." in key:
            merged[key] = torch.cat([weight * t1, (1.0 - weight) * t2], dim=1)
        else:
            raise ValueError(f"unexpected adapter weight {key}")
        merged[key] = merged[key].to(dtype).contiguous()
    config = dict(configs[0], r=2 * configs[0]["r"], lora_alpha=2 * configs[0]["lora_alpha"])
    out.mkdir(parents=True, exist_ok=True)
    save_file(merged, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return config


# Run settings that may differ between the two runs of a soup (the rest of the recipe must be the same).
MAY_DIFFER = ("output_dir", "epochs", "max_steps", "time_budget_minutes", "save_every")


def adapter_folder(run: Path) -> Path:
    """A run's adapter: ``adapter/`` of a training run, or the folder itself (training/candidates/*)."""
    return run / "adapter" if (run / "adapter" / "adapter_config.json").is_file() else run


def soup_runs(first: Path, second: Path, weight: float, out: Path, dtype: str | None = None) -> dict:
    """``soup`` of two training runs into the run folder ``out``; returns its summary."""
    runs = [json.loads((run / "summary.json").read_text()) for run in (first, second)]
    differ = sorted(k for k in set(runs[0]["config"]) | set(runs[1]["config"])
                    if k not in MAY_DIFFER and runs[0]["config"].get(k) != runs[1]["config"].get(k))
    if differ:
        raise ValueError(f"the runs differ in their recipe ({', '.join(differ)}): a soup is of one recipe")
    soup(adapter_folder(first), adapter_folder(second), weight, out / "adapter", dtype)
    summary = {k: runs[0][k] for k in ("config", "train_reports", "clean_rules", "prompt_template")}
    summary["config"] = dict(summary["config"], output_dir=str(out))
    # Training cost and loss are the two runs' together; the per-run figures are kept under "soup".
    summary |= {"steps": runs[0]["steps"] + runs[1]["steps"], "steps_per_epoch": runs[0]["steps_per_epoch"],
                "epochs": runs[0]["epochs"] + runs[1]["epochs"],
                "train_seconds": runs[0]["train_seconds"] + runs[1]["train_seconds"],
                "seconds_per_epoch": None, "tokens_per_s": None, "final_loss": None,
                "soup": {"weights": [weight, 1.0 - weight], "runs": [
                    {"run": str(run), "summary": s} for run, s in zip((first, second), runs)]}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path, help="a training run folder (adapter/, summary.json)")
    ap.add_argument("second", type=Path)
    ap.add_argument("--weight", type=float, default=0.5, help="the first run's share (the second's is 1 - w)")
    ap.add_argument("--out", type=Path, required=True, help="the soup's run folder")
    ap.add_argument("--dtype", choices=("float16", "float32"), help="on disk (default: the first adapter's)")
    args = ap.parse_args(argv)
    summary = soup_runs(args.first, args.second, args.weight, args.out, args.dtype)
    print(f"soup of {args.first} ({args.weight}) and {args.second} ({1 - args.weight}): {summary['steps']} steps "
          f"-> {args.out}/adapter")


if __name__ == "__main__":
    main()
