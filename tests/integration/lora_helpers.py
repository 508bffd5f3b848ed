"""Random (not trained) LoRA adapters in PEFT's on-disk format, written without loading the base model."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors.torch import save_file
from transformers import AutoConfig

from radbridge.adapters.model.local import GGUF_FILE, smollm2_folder


def write_random_lora(folder: Path, *, seed: int = 0, r: int = 8, scale: float = 0.05) -> Path:
    """A q_proj/v_proj LoRA (the Radiology-Llama2 recipe) with random A and B.

    PEFT's default initialisation sets B = 0, which makes an adapter an exact no-op; a trained adapter
    never is, so B is random here too. ``scale`` keeps the model coherent while clearly changing it.
    """
    cfg = _base_config()
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    outs = {"q_proj": cfg.num_attention_heads * head_dim, "v_proj": cfg.num_key_value_heads * head_dim}
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(cfg.num_hidden_layers):
        for module, out_dim in outs.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(r, cfg.hidden_size, generator=gen) / cfg.hidden_size**0.5
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_dim, r, generator=gen) * scale
    folder.mkdir(parents=True, exist_ok=True)
    LoraConfig(
        r=r, lora_alpha=2 * r, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    ).save_pretrained(str(folder))
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


@functools.lru_cache(maxsize=1)
def _base_config():
    # Only the shapes are read; parsing them out of the GGUF file takes ~5 s on 2 cores, so once per run.
    return AutoConfig.from_pretrained(smollm2_folder(), gguf_file=GGUF_FILE)
