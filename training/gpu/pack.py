"""Pack one finished training run for the way back from a device machine: ``python3 training/gpu/pack.py RUN OUT``.

Writes OUT (a folder, or a ``.tar`` file) holding ``adapter/adapter_model.safetensors`` in fp16 (9.8 MB for r=16 on
all 30 layers, under the 16 MiB a returned file may have), ``adapter/adapter_config.json``, the run's
``summary.json``, ``log.jsonl`` and ``config.json``, and ``tune_drafts.json`` when the run has one; prints the
summary without its config. A ``.tar`` keeps a run in one file, since at most 8 files come back from a call.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save

SIDE_FILES = ("summary.json", "log.jsonl", "config.json")


def packed(run: Path) -> dict[str, bytes]:
    """Path inside the run folder -> bytes, the adapter's weights in fp16."""
    weights = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    files = {"adapter/adapter_model.safetensors": save({k: v.to(torch.float16).contiguous() for k, v in weights.items()}),
             "adapter/adapter_config.json": (run / "adapter" / "adapter_config.json").read_bytes()}
    files.update({name: (run / name).read_bytes() for name in SIDE_FILES})
    if (run / "tune_drafts.json").is_file():  # DRAFT_TUNE=1 many.sh: training.gpu_drafts wrote it
        files["tune_drafts.json"] = (run / "tune_drafts.json").read_bytes()
    return files


def write(files: dict[str, bytes], out: Path) -> None:
    if out.suffix == ".tar":
        with tarfile.open(out, "w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"{out.stem}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)


def main(argv: list[str]) -> None:
    run, out = Path(argv[0]), Path(argv[1])
    write(packed(run), out)
    summary = json.loads((run / "summary.json").read_text())
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))


if __name__ == "__main__":
    main(sys.argv[1:])
