"""The ``Generator`` port on text-generation-inference's native ``/generate`` API (production path).

Every request sets ``details``, ``do_sample`` and ``max_new_tokens`` explicitly: TGI's defaults for them
differ between its spec and its server. ``check()`` also catches TGI's silent fallback to the base model
for an adapter it does not know (see ``RemoteGenerator._check_adapter_changes_output``).

A template's end rule (``+end<pct>``, GenerationParams.end_threshold) has no TGI parameter, so it is applied
here from what TGI returns (``_generate_one``): the draft is asked for with ``top_n_tokens`` 2; when it ended on
the end-of-sequence token with less than the threshold's probability, the end is held once, as the local backend
holds it: the most likely other token of that step is taken, and the draft is continued by a second request
whose input is the prompt followed by the text so far. That continuation reads the text re-tokenized, where the
local backend keeps the generated tokens, so the two could go on differently where a text re-tokenizes into other
tokens; against ``radbridge serve-model`` (TGI's API on the in-process model) they wrote the same drafts for the
four real OpenI findings of tests/integration/test_model_server.py (a random test adapter, at least one end held).
"""

from __future__ import annotations

import math
from dataclasses import replace

from huggingface_hub import InferenceClient
from huggingface_hub.utils import get_session

from ...domain import Generation, GenerationParams
from ...errors import ConfigurationError, GenerationRejected, GeneratorUnavailable
from ...prompt import STOP_SEQUENCES, ChatFormat, Prompt, cut_at_stops, render
from .client import PROBE, RemoteGenerator

class TgiGenerator(RemoteGenerator):
    """TGI ``POST /generate`` with ``adapter_id``; prompts of a batch are sent as concurrent requests."""

    backend = "tgi"

    def __init__(self, url: str, *, chat_format: ChatFormat = "chatml", **kwargs):
        super().__init__(url, **kwargs)
        self.chat_format = chat_format
        self.stops = list(STOP_SEQUENCES[chat_format])
        self._client = InferenceClient(base_url=f"{self.url}/generate", timeout=self.timeout, headers=self.headers)

    def _request(self, text: str, params: GenerationParams, *, adapter: str | None, **extra):
        sampling = {"do_sample": params.do_sample}
        if params.do_sample:
            sampling.update(temperature=params.temperature, top_p=params.top_p, seed=params.seed)
        return self._client.text_generation(
            text,
            adapter_id=adapter,
            details=True,
            max_new_tokens=params.max_new_tokens,
            stop=self.stops,
            repetition_penalty=params.repetition_penalty,
            **sampling,
            **extra,
        )

    def _generate_one(self, prompt: Prompt, params: GenerationParams) -> Generation:
        text = render(prompt, self.chat_format)
        if params.end_threshold:
            return self._generate_holding_end(text, params)
        return self._generation(self._request(text, params, adapter=self.adapter))

    def _generation(self, out, before: str = "", tokens_before: int = 0) -> Generation:
        """A TGI answer as a Generation; ``before``: text (and its token count) the answer continues."""
        details = out.details
        return Generation(
            text=cut_at_stops(before + out.generated_text, self.stops),
            finish_reason=details.finish_reason if details else None,
            generated_tokens=tokens_before + details.generated_tokens if details else None,
        )

    def _generate_holding_end(self, text: str, params: GenerationParams) -> Generation:
        """``params.end_threshold`` from TGI's answer (module docstring): at most one end held, then one
        continuation request. A server that returns no token details cannot be judged, and says so."""
        out = self._request(text, params, adapter=self.adapter, top_n_tokens=2)
        details = out.details
        if details is None or not details.tokens or details.top_tokens is None:
            raise GenerationRejected(
                f"{self._what}: the end rule (+end) needs token details and top_n_tokens, and the server sent none")
        first = self._generation(out)
        end = details.tokens[-1]
        if details.finish_reason != "eos_token" or end.logprob is None:
            return first
        if end.logprob >= math.log(params.end_threshold):
            return first  # a sure end: final
        # huggingface_hub leaves top_tokens' inner lists as plain dicts: read both shapes
        step = [t if isinstance(t, dict) else vars(t) for t in (details.top_tokens or [[]])[-1]]
        alternatives = sorted((t for t in step if t["id"] != end.id), key=lambda t: -t["logprob"])
        if not alternatives or alternatives[0]["special"]:
            return first  # nothing to go on with but another special token: the end stands
        held = first.text + alternatives[0]["text"]
        used = details.generated_tokens  # the held end's step now carries the alternative
        if used >= params.max_new_tokens:
            return Generation(held, "length", used)
        rest = self._request(text + held, replace(params, max_new_tokens=params.max_new_tokens - used,
                                                  end_threshold=None), adapter=self.adapter)
        return self._generation(rest, held, used)

    def _get_json(self, path: str) -> dict | None:
        def call():
            response = get_session().get(f"{self.url}{path}", timeout=self.timeout, headers=self.headers)
            response.raise_for_status()
            return response.json() if response.content else None

        return self._once(call)

    def check(self) -> None:
        """Health, identity (``/info``) and, with an adapter configured, proof that it changes the output."""
        self._get_json("/health")
        info = self._get_json("/info") or {}
        model_id = info.get("model_id")
        if not model_id:
            raise GeneratorUnavailable(f"{self._what}: /info did not name a model")
        if self.base_model and model_id != self.base_model:
            raise ConfigurationError(f"{self._what} serves {model_id!r}, configured base model is {self.base_model!r}")
        self._server_model = model_id
        self._server_version = " ".join(str(x) for x in (info.get("router"), info.get("version")) if x) or None
        if self.adapter:
            self._check_adapter_changes_output(self._probe)

    def _probe(self, adapter: str | None) -> list[float]:
        params = GenerationParams(max_new_tokens=1)
        out = self._once(
            lambda: self._request(render(PROBE, self.chat_format), params, adapter=adapter, decoder_input_details=True)
        )
        details = out.details
        if details is None:
            return []
        values = [t.logprob for t in details.prefill if t.logprob is not None]
        return values + [t.logprob for t in details.tokens if t.logprob is not None]

