"""Credentials inside URLs never reach output: settings, check, errors, retry logs; bad settings are one line."""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

from radbridge.adapters.model.tgi import TgiGenerator
from radbridge.cli import app, fail_line
from radbridge.domain import GenerationParams
from radbridge.errors import GeneratorUnavailable
from radbridge.prompt import DEFAULT_TEMPLATE, build
from radbridge.redact import mask_url, mask_urls_in
from radbridge.settings import Settings

SECRET_URL = "https://svc:Pa55w0rd-XYZ@models.example:8443/v1?access_token=TOKEN-XYZ&sig=SIG-XYZ&model=radiology"


@pytest.mark.parametrize(
    "url,expected",
    [
        (SECRET_URL, "https://svc:***@models.example:8443/v1?access_token=***&sig=***&model=radiology"),
        ("http://only-user@h/", "http://***@h/"),
        ("http://h:8080/generate", "http://h:8080/generate"),
        (None, None),
    ],
)
def test_mask_url(url, expected):
    assert mask_url(url) == expected


def test_urls_inside_library_messages_are_masked():
    text = f"Client error '422' for url '{SECRET_URL}'"
    assert "XYZ" not in mask_urls_in(text) and "models.example" in mask_urls_in(text)


def test_settings_command_masks_urls(monkeypatch):
    monkeypatch.setenv("RADBRIDGE_MODEL_URL", SECRET_URL)
    monkeypatch.setenv("RADBRIDGE_FHIR_URL", SECRET_URL)
    out = CliRunner().invoke(app, ["settings"]).stdout
    assert "XYZ" not in out and json.loads(out)["model_url"].startswith("https://svc:***@")


def test_model_errors_and_retry_logs_never_carry_url_credentials(caplog):
    gen = TgiGenerator("http://svc:Pa55w0rd-XYZ@127.0.0.1:9/?access_token=TOKEN-XYZ", timeout=1.0)
    prompt = build(DEFAULT_TEMPLATE, "Heart normal.")
    with caplog.at_level(logging.DEBUG), pytest.raises(GeneratorUnavailable) as err:
        gen.generate([prompt], GenerationParams(max_new_tokens=4))
    assert "XYZ" not in str(err.value) and "***" in str(err.value)
    assert "XYZ" not in caplog.text
    assert "XYZ" not in (fail_line(err.value) or "")


def test_a_bad_setting_is_one_clear_line():
    with pytest.raises(Exception) as err:
        Settings(batch_size="abc")
    line = fail_line(err.value)
    assert line is not None and line.startswith("radbridge: invalid setting RADBRIDGE_BATCH_SIZE") and "\n" not in line
