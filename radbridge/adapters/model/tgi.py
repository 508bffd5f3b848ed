"""The ``Generator`` port on text-generation-inference's native ``/generate`` API (production path).

Every request sets ``details``, ``do_sample`` and ``max_new_tokens`` explicitly: TGI's defaults for them
differ between its spec and its server. ``check()`` also catches TGI's silent fallback to the base model
for an adapter it does not know (see ``RemoteGenerator._check_adapter_changes_output``).
"""

from __future__ import annotations

from huggingface_hub import InferenceClient
from huggingface_hub.utils import get_session

from ...domain import Generation, GenerationParams
from ...errors import ConfigurationError, GeneratorUnavailable
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
        out = self._request(render(prompt, self.chat_format), params, adapter=self.adapter)
        details = out.details
        return Generation(
            text=cut_at_stops(out.generated_text, self.stops),
            finish_reason=details.finish_reason if details else None,
            generated_tokens=details.generated_tokens if details else None,
        )

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

