"""The shipped adapter (model/) loads as released and stays above its measured quality on 50 valid reports.

The floor is the value measured when the adapter was shipped (manifest.json, metrics.valid_first50) minus a
margin: a later change to the prompt module, the generator or the labeler that makes drafts worse fails here.
"""

import json
from pathlib import Path

import pytest

from radbridge.evaluation import run
from radbridge.prompt import PromptTemplate
from radbridge.settings import Settings
from training.data import load_split, write_jsonl

MODEL = Path(__file__).resolve().parents[2] / "model"
SAMPLE = 50
ROUGE_MARGIN = 0.03
CLINICAL_MARGIN = 0.10  # 50 reports hold few abnormal mentions: one miss moves F1 by several points


@pytest.fixture(scope="module")
def manifest():
    from radbridge.adapters.model.local import Manifest

    return Manifest.read(MODEL).data


def test_manifest_describes_the_files(manifest):
    from radbridge.adapters.model.local import file_sha256

    assert file_sha256(MODEL / "adapter_model.safetensors") == manifest["adapter_sha256"]
    # r=16 on every projection, zero-padded to all 30 layers for TGI: ~20 MB, small beside the 270 MB base model
    assert (MODEL / "adapter_model.safetensors").stat().st_size < 25_000_000
    config = json.loads((MODEL / "adapter_config.json").read_text())
    assert not config.get("layers_to_transform")  # every layer present: TGI drops a module missing in any layer
    assert manifest["base_model_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert manifest["chat_format"] == "chatml"
    assert PromptTemplate.from_id(manifest["prompt_template"]).id == manifest["prompt_template"]
    assert "non-commercial" in manifest["data"]["license"]
    assert (MODEL / "MODEL_CARD.md").is_file()


@pytest.mark.integration
@pytest.mark.usefixtures("read_gguf_once")  # the base model as the run first read it
def test_shipped_adapter_stays_above_its_floor(manifest, tmp_path):
    measured = manifest["metrics"]["valid_first50"]
    data = tmp_path / "valid50.jsonl"
    write_jsonl(data, load_split("valid")[:SAMPLE])
    settings = Settings(backend="local", adapter=str(MODEL), max_new_tokens=48, local_batch_size=8)
    result = run(settings, data, tmp_path / "out.json", batch_size=8, progress=False)
    assert result["n"] == SAMPLE
    assert result["rougeL"] >= measured["rougeL"] - ROUGE_MARGIN
    assert result["clinical_f1"] >= measured["clinical_f1"] - CLINICAL_MARGIN
    # never the base model's rambling; and no shorter than when shipped (it is already terser than radiologists)
    assert result["mean_draft_words"] <= 1.3 * result["mean_reference_words"]
    assert result["mean_draft_words"] >= 0.8 * measured["mean_draft_words"]
