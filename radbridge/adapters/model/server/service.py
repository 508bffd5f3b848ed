"""What every route shares: TGI's validation, request → batch row, adapter resolution, admission count, /info."""

from __future__ import annotations

import copy
import logging
import threading
import uuid

from .... import __version__
from ..local import LocalModel, RowRequest, Sampling
from .batcher import MicroBatcher
from .schemas import BASE_ALIASES, ROUTER, GenerateParameters, ServerConfig, validation_error

log = logging.getLogger(__name__)

# TGI's launcher default (--max-top-n-tokens 5): the most alternatives a request may ask for per token
MAX_TOP_N_TOKENS = 5


class ModelService:
    def __init__(self, model: LocalModel, config: ServerConfig):
        self.model = model
        self.config = config
        self.batcher = MicroBatcher(model, config.max_batch_size, config.batch_wait_ms)
        self.in_flight = 0
        self._count_tok = None
        self._count_lock = threading.Lock()

    def count(self, text: str) -> int:
        # A private tokenizer copy: the generation thread's tokenizer changes its padding state per batch,
        # and the Rust tokenizer refuses concurrent use while it does ("Already borrowed").
        with self._count_lock:
            if self._count_tok is None:
                self._count_tok = copy.deepcopy(self.model.tokenizer)
            return len(self._count_tok(text, add_special_tokens=False)["input_ids"])

    def truncate_left(self, text: str, keep: int) -> str:
        with self._count_lock:
            ids = self._count_tok(text, add_special_tokens=False)["input_ids"]
            return self._count_tok.decode(ids[-keep:]) if len(ids) > keep else text

    def resolve_adapter(self, adapter_id: str | None) -> str | None:
        if adapter_id is None or adapter_id in BASE_ALIASES or adapter_id == self.config.model_id:
            return None
        if adapter_id in self.model.adapter_dirs:
            return adapter_id
        # TGI's behaviour, kept deliberately: the base model answers. Clients must detect this themselves.
        log.warning("unknown adapter_id %r: falling back to the base model", adapter_id)
        return None

    def validate(self, inputs: str, p: GenerateParameters, *, stream: bool) -> tuple[RowRequest, Sampling, int]:
        """TGI's checks, in TGI's order and wording; the batch row, its sampling and the input token count."""
        cfg = self.config
        if not inputs:
            raise validation_error("`inputs` cannot be empty")
        if p.max_new_tokens is not None and p.max_new_tokens <= 0:
            raise validation_error("`max_new_tokens` must be strictly positive")
        if p.temperature is not None and p.temperature <= 0:
            raise validation_error("`temperature` must be strictly positive")
        if p.top_p is not None and not 0 < p.top_p < 1:
            raise validation_error("`top_p` must be > 0.0 and < 1.0")
        if p.top_k is not None and p.top_k <= 0:
            raise validation_error("`top_k` must be strictly positive")
        if p.repetition_penalty is not None and p.repetition_penalty <= 0:
            raise validation_error("`repetition_penalty` must be strictly positive")
        if len(p.stop) > cfg.max_stop_sequences:
            raise validation_error(
                f"`stop` supports up to {cfg.max_stop_sequences} stop sequences. Given: {len(p.stop)}"
            )
        if p.best_of is not None and p.best_of > 1:
            raise validation_error("`best_of` must be 1 on this server")
        if stream and p.decoder_input_details:
            raise validation_error("`decoder_input_details` == true is not supported when streaming tokens")
        if p.top_n_tokens is not None and not 0 <= p.top_n_tokens <= MAX_TOP_N_TOKENS:
            raise validation_error(f"`top_n_tokens` must be >= 0 and <= {MAX_TOP_N_TOKENS}. Given: {p.top_n_tokens}")
        for name in ("grammar", "typical_p", "frequency_penalty"):
            if getattr(p, name):
                raise validation_error(f"`{name}` is not supported by this server")
        if p.watermark:
            raise validation_error("`watermark` is not supported by this server")
        if p.truncate is not None:
            inputs = self.truncate_left(inputs, p.truncate)
        n_in = self.count(inputs)
        if n_in > cfg.input_limit:
            raise validation_error(f"`inputs` must have less than {cfg.input_limit} tokens. Given: {n_in}")
        max_new = p.max_new_tokens if p.max_new_tokens is not None else cfg.max_total_tokens - n_in
        if n_in + max_new > cfg.max_total_tokens:
            raise validation_error(
                f"`inputs` tokens + `max_new_tokens` must be <= {cfg.max_total_tokens}. "
                f"Given: {n_in} `inputs` tokens and {max_new} `max_new_tokens`"
            )
        sampling = Sampling(
            do_sample=p.do_sample,
            temperature=p.temperature if p.do_sample else None,
            top_p=p.top_p if p.do_sample else None,
            top_k=p.top_k if p.do_sample else None,
            repetition_penalty=p.repetition_penalty,
            seed=(p.seed if p.seed is not None else int(uuid.uuid4().int % 2**63)) if p.do_sample else None,
        )
        row = RowRequest(inputs, max_new, self.resolve_adapter(p.adapter_id), tuple(p.stop), p.decoder_input_details,
                         p.top_n_tokens or 0)
        return row, sampling, n_in

    def info(self) -> dict:
        cfg = self.config
        return {
            "model_id": cfg.model_id,
            "model_sha": self.model.base_sha256,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": cfg.max_concurrent_requests,
            "max_best_of": 1,
            "max_stop_sequences": cfg.max_stop_sequences,
            "max_input_tokens": cfg.input_limit,
            "max_total_tokens": cfg.max_total_tokens,
            "validation_workers": 1,
            "max_client_batch_size": 1,
            "router": ROUTER,
            "version": __version__,
            "sha": None,
            "docker_label": None,
        }
