"""One settings class: environment variables (prefix RADBRIDGE_) over an optional TOML config file over defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .limits import DEFAULT_LIMITS

#: the adapter shipped in the repository (model/); the local backend uses it when none is configured
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"

Backend = Literal["local", "tgi", "openai", "instant"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RADBRIDGE_", extra="forbid", validate_default=True)

    # --- Kafka -------------------------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; unset = start the embedded Tansu broker on 127.0.0.1"
    )
    input_topics: Annotated[list[str], NoDecode] = Field(
        default=["radiology.results"], description="comma-separated; HL7 v2 and FHIR JSON may share a topic"
    )
    output_topic: str = Field(default="radiology.drafts", description="FHIR transaction Bundles (JSON)")
    dlq_topic: str = Field(default="radiology.results.dlq", description="original bytes of rejected messages")
    group_id: str = "radbridge"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    batch_size: int = Field(default=8, ge=1, le=512, description="records drafted together")
    batch_wait_ms: int = Field(default=200, ge=0, description="longest wait to fill a batch")
    # consumer group timing (radbridge.service): the loop keeps polling while it backs off from an outage,
    # so max_poll_interval_ms only has to cover drafting one batch
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    retry_initial_s: float = Field(default=0.5, gt=0, description="first backoff after a dependency failure")
    retry_max_s: float = Field(default=30.0, gt=0, description="backoff cap while a dependency stays down")
    embedded_port: int = Field(
        default=19092, ge=0, le=65535, description="port of the embedded broker (used when kafka_bootstrap is unset)"
    )
    embedded_partitions: int = Field(default=3, ge=1, description="partitions of topics the embedded broker creates")

    # --- model -------------------------------------------------------------------------------------------
    backend: Backend = "local"
    model_url: str | None = Field(default=None, description="TGI or OpenAI-compatible base URL (tgi/openai)")
    adapter: str | None = Field(
        default=None, description="local: PEFT adapter folder (default: the shipped model/); tgi/openai: adapter id"
    )
    no_adapter: bool = Field(default=False, description="use the base model alone (evaluation of the untuned model)")
    model_api_key: SecretStr | None = Field(
        default=None, description="bearer token sent to the model server (tgi/openai) and required by serve-model"
    )
    request_timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    max_new_tokens: int = Field(default=96, ge=1, le=1024)
    local_batch_size: int = Field(default=8, ge=1)
    prompt_template: str | None = Field(default=None, description="template id; default: the adapter's manifest")
    examples_file: Path | None = Field(
        default=None, description="JSONL of signed reports (findings, impression) for example-based prompts"
    )

    # --- clinical safety ---------------------------------------------------------------------------------
    manifest_file: Path | None = Field(
        default=None,
        description="tgi/openai: manifest.json of the adapter the server serves (its scope applies); "
        "default: the shipped model/manifest.json",
    )
    scope_codes: Annotated[list[str], NoDecode] = Field(
        default=[], description="comma-separated procedure codes ('system|code' or 'code') drafted besides the manifest's"
    )
    scope_excluded_codes: Annotated[list[str], NoDecode] = Field(
        default=[], description="comma-separated procedure codes never drafted, even if the manifest lists them"
    )
    scope_unknown: Literal["skip", "draft"] | None = Field(
        default=None, description="a report whose exam no scope rule decides: skip or draft (default: the manifest's)"
    )
    on_flag: Literal["send", "hold"] = Field(
        default="send", description="a draft the checker flagged: send it with its DetectedIssues, or hold it"
    )
    review_topic: str = Field(
        default="radiology.drafts.review", description="held (flagged) drafts go here instead of the output topic"
    )
    # --- sign-off feedback (radbridge.service.signoff): needs fhir_url, the draft memory ---------------------
    feedback_topic: str | None = Field(
        default=None, description="one record per signed report (ids, scores, classes); unset: metrics only"
    )
    feedback_per_reader: bool = Field(
        default=False, description="per-radiologist sign-off figures, with pseudonymous ids (needs the key below)"
    )
    feedback_reader_key: SecretStr | None = Field(
        default=None, description="secret key of the HMAC-SHA256 that pseudonymises the reader id"
    )

    # --- output ------------------------------------------------------------------------------------------
    mode: Literal["live", "replay"] = "live"
    output_status: Literal["preliminary", "partial"] = "preliminary"
    emit_oru: bool = Field(default=False, description="also build an HL7 v2 ORU^R01 per draft (set by oru_topic)")
    oru_topic: str | None = Field(default=None, description="serve: also publish each draft as an ORU^R01 here")
    fhir_url: str | None = Field(default=None, description="also write every Bundle to this FHIR server")
    fhir_token: SecretStr | None = None
    fhir_ca_bundle: Path | None = None

    # --- limits (radbridge.limits): over one, the message is dead-lettered with reason limit_exceeded ------
    max_message_bytes: int = Field(default=DEFAULT_LIMITS.max_message_bytes, ge=1, description="bytes of one payload")
    max_segments: int = Field(default=DEFAULT_LIMITS.max_segments, ge=1, description="HL7 v2 segments per message")
    max_entries: int = Field(
        default=DEFAULT_LIMITS.max_entries, ge=1, description="FHIR Bundle entries (all levels), contained or results"
    )
    max_reports: int = Field(default=DEFAULT_LIMITS.max_reports, ge=1, description="reports per message")
    max_attachment_bytes: int = Field(
        default=DEFAULT_LIMITS.max_attachment_bytes, ge=1, description="bytes of one decoded attachment"
    )
    max_pdf_pages: int = Field(default=DEFAULT_LIMITS.max_pdf_pages, ge=1, description="pages of one PDF attachment")
    max_text_chars: int = Field(
        default=DEFAULT_LIMITS.max_text_chars, ge=1, description="characters of one report's text or one attachment's"
    )
    message_budget_s: float = Field(
        default=DEFAULT_LIMITS.message_budget_s, ge=1, description="wall-clock seconds reading one message may take"
    )

    # --- operations --------------------------------------------------------------------------------------
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9400, ge=0, le=65535)
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _oru_topic_needs_oru(self) -> "Settings":
        if self.oru_topic:
            self.emit_oru = True
        return self

    @field_validator("input_topics", "scope_codes", "scope_excluded_codes", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("RADBRIDGE_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def public_dict(self) -> dict:
        """Settings safe to print or log: secrets stay masked, and so do credentials inside URLs."""
        from .redact import mask_url

        out = self.model_dump(mode="json")
        for key in ("model_url", "fhir_url", "kafka_bootstrap"):
            out[key] = mask_url(out.get(key))
        return out
