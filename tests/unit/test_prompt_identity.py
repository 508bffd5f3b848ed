"""Training, serving and evaluation build byte-identical prompt text for the same report (issue 10).

No model or tokenizer: training's text part (``training.train.prompt_text``) is what its tokenizer is applied to.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from radbridge import samples
from radbridge.domain import Generation, ModelInfo
from radbridge.evaluation import PipelineDrafter
from radbridge.pipeline import Drafter, Envelope, Mode
from radbridge.prompt import PromptTemplate, render
from training.train import TrainConfig, example_shots, prompt_text

ROOT = Path(__file__).resolve().parents[2]
LONG = ("The heart is normal in size.The mediastinum is unremarkable. " + " ".join(f"word{i}" for i in range(70))
        + ". There is no pneumothorax at the right apex.There is no effusion.")
REPORTS = [
    # longer than the shipped 60-word cut, with glued "size.The" / "apex.There" sentence ends
    {"uid": "long", "indication": "cough", "comparison": "none", "findings": LONG, "impression": "No acute disease."},
    # one line per OBX-style line, some without a full stop
    {"uid": "lines", "indication": "", "comparison": "",
     "findings": "Heart size normal\nLungs are clear.\nNo pleural effusion or pneumothorax\nDegenerative spine",
     "impression": "No acute cardiopulmonary abnormality."},
]
SIGNED = [
    {"uid": "s1", "findings": "Heart size normal. Lungs clear. No effusion. No pneumothorax.", "impression": "Normal chest."},
    {"uid": "s2", "findings": "Large right pleural effusion with atelectasis. Heart normal.", "impression": "Right effusion."},
    {"uid": "s3", "findings": "Heart enlarged. Interstitial edema. Degenerative changes of the spine.",
     "impression": "Cardiomegaly, mild edema."},
]


class Recorder:
    """A generator that keeps the prompts it was asked for."""

    info = ModelInfo(backend="test", base_model="test")

    def __init__(self):
        self.prompts = []

    def generate(self, prompts, params):
        self.prompts += prompts
        return [Generation("No acute disease.") for _ in prompts]


class Fixed:
    """An example source answering with the examples training chose for the report."""

    def __init__(self, by_findings):
        self.by_findings = by_findings

    def examples_for(self, findings, k):
        return self.by_findings[findings][:k]


MANIFEST = json.loads((ROOT / "model" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def cfg() -> TrainConfig:
    """The recipe the shipped adapter was trained with, as its manifest records it."""
    return TrainConfig.from_dict(MANIFEST["training_config"])


def test_the_shipped_manifest_names_the_template_its_recipe_trains_with(cfg):
    shipped = PromptTemplate.from_id(MANIFEST["prompt_template"])
    # the same prompt text; only the wording policy (what is done with a completion) may be added for serving
    assert shipped.without_policy == cfg.template
    assert cfg.template.findings_words == 60 and "+fwords60" in shipped.id


@pytest.mark.parametrize("chat_format", ["chatml", "llama2"])
def test_training_serving_and_eval_build_the_same_prompt_text(cfg, chat_format):
    cfg = replace(cfg, chat_format=chat_format)
    records = REPORTS + SIGNED
    shots = example_shots(cfg, records)  # retrieved as training retrieves them (the report itself excluded)
    assert all(len(s) == 2 for s in shots)
    trained = [prompt_text(cfg, r, ex) for r, ex in zip(REPORTS, shots)]
    examples = Fixed({r["findings"]: ex for r, ex in zip(REPORTS, shots)})

    # serving: the reports arrive as HL7 v2 messages and are read, then drafted, by the pipeline
    serving = Recorder()
    drafter = Drafter(serving, mode=Mode.REPLAY, template=cfg.template, examples=examples)
    outcomes = drafter.process([Envelope(samples.to_hl7v2(r, status="P")) for r in REPORTS])
    assert [o.status for o in outcomes] == ["drafted", "drafted"]
    assert [d.report.findings for o in outcomes for d in o.drafts] == [r["findings"] for r in REPORTS]
    served = [render(p, chat_format) for p in serving.prompts]

    # evaluation: the same records through radbridge eval's drafter
    evaluating = Recorder()
    PipelineDrafter(Drafter(evaluating, template=cfg.template, examples=examples), progress=False)(REPORTS)
    evaluated = [render(p, chat_format) for p in evaluating.prompts]

    assert served == trained
    assert evaluated == trained
    long_findings = trained[0].split("Findings: ")[-1]
    assert "size. The" in long_findings and len(long_findings.split()) <= 60 + 10  # cut (chat markers follow)
    assert "word69" not in trained[0] and "apex" not in long_findings
    assert "Heart size normal. Lungs are clear. No pleural effusion or pneumothorax. Degenerative spine" in trained[1]
