"""The ``Generator`` port on the OpenAI-compatible chat API (TGI's Messages API, vLLM, SGLang).

The server applies the model's chat template to ``prompt.messages(p)``; for SmolLM2 that template equals
``prompt.render(p, "chatml")`` (tested), so this path and the raw ``/generate`` path see the same text.
"""

from __future__ import annotations

import logging

from huggingface_hub import InferenceClient
from huggingface_hub.utils import get_session

from ...domain import Generation, GenerationParams
from ...errors import AdapterMismatch
from ...prompt import ALL_STOPS, Prompt, cut_at_stops, messages
from .client import PROBE, RemoteGenerator

log = logging.getLogger(__name__)

_FINISH = {"stop": "eos_token", "length": "length", "eos_token": "eos_token", "stop_sequence": "stop_sequence"}


class OpenAIGenerator(RemoteGenerator):
    """``POST /v1/chat/completions``; ``model`` is the adapter name, or ``base_model_name`` without one."""

    backend = "openai"

    def __init__(self, url: str, *, base_model_name: str = "tgi", **kwargs):
        super().__init__(url, **kwargs)
        # TGI takes "tgi" for "no adapter"; vLLM and SGLang want the served model's name.
        self.base_model_name = base_model_name
        self._client = InferenceClient(base_url=self.url, timeout=self.timeout, headers=self.headers)

    def _chat(self, prompt: Prompt, params: GenerationParams, model: str, **extra):
        sampling = (
            {"temperature": params.temperature if params.temperature is not None else 1.0, "top_p": params.top_p}
            if params.do_sample
            else {"temperature": 0.0}  # explicit: TGI's chat API samples when temperature is left out
        )
        return self._client.chat_completion(
            messages=messages(prompt),
            model=model,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            **sampling,
            **extra,
        )

    def _generate_one(self, prompt: Prompt, params: GenerationParams) -> Generation:
        out = self._chat(prompt, params, self.adapter or self.base_model_name)
        choice = out.choices[0]
        usage = out.usage
        return Generation(
            text=cut_at_stops(choice.message.content or "", ALL_STOPS),
            finish_reason=_FINISH.get(choice.finish_reason, choice.finish_reason),
            generated_tokens=usage.completion_tokens if usage else None,
        )

    def _models(self) -> dict | list | None:
        def call():
            response = get_session().get(f"{self.url}/v1/models", timeout=self.timeout, headers=self.headers)
            response.raise_for_status()
            return response.json()

        return self._once(call)

    def check(self) -> None:
        """Reachability via ``/v1/models``; with an adapter, that it is listed (if the server lists) and applied."""
        listed = self._models()
        ids = _model_ids(listed)
        if ids:
            self._server_model = ids[0]
        if not self.adapter:
            return
        if len(ids) > 1 and self.adapter not in ids:
            # vLLM/SGLang list their LoRA modules; TGI returns only the base model, so only lists of >1 count
            raise AdapterMismatch(f"{self._what} does not list adapter {self.adapter!r} (it lists {', '.join(ids)})")
        self._check_adapter_changes_output(self._probe)

    def _probe(self, adapter: str | None) -> list[float]:
        params = GenerationParams(max_new_tokens=4)
        out = self._once(lambda: self._chat(PROBE, params, adapter or self.base_model_name, logprobs=True))
        logprobs = out.choices[0].logprobs
        return [c.logprob for c in logprobs.content] if logprobs and logprobs.content else []


def _model_ids(listed) -> list[str]:
    if isinstance(listed, dict) and isinstance(listed.get("data"), list):
        return [m.get("id") for m in listed["data"] if isinstance(m, dict) and m.get("id")]
    if isinstance(listed, dict) and listed.get("id"):  # TGI: one ModelInfo object
        return [listed["id"]]
    return []
