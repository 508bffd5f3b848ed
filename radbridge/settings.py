"""One settings class: environment variables (prefix RADBRIDGE_) over an optional TOML config file over defaults."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigurationError
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
    kafka_oauth_token_url: str | None = Field(
        default=None, description="SASL OAUTHBEARER: OAuth2 token endpoint (client credentials grant)"
    )
    kafka_oauth_client_id: str | None = None
    kafka_oauth_client_secret: SecretStr | None = None
    kafka_oauth_scope: str | None = None
    kafka_options: dict[str, Any] = Field(
        default={},
        description="other kafka-python client settings, one RADBRIDGE_KAFKA_OPT_<NAME>=value each "
        "(typed as kafka-python's default; names it does not know are refused)",
    )
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
    model_ca_bundle: Path | None = Field(
        default=None, description="CA bundle (PEM) that verifies the model server's TLS certificate (tgi/openai)"
    )
    request_timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    max_new_tokens: int = Field(default=96, ge=1, le=1024)
    local_batch_size: int = Field(default=8, ge=1)
    local_quantize: Literal["int8"] | None = Field(
        default=None, description="local backend: dynamic int8 Linear layers (faster on CPU; drafts change: see bench)"
    )
    local_dtype: Literal["float32", "bfloat16", "auto"] = Field(
        default="auto",
        description="local backend: weights' dtype; auto: bfloat16 where the CPU computes it natively (AVX512-BF16 or "
        "AMX: ~1.6x faster, a few drafts worded differently, see bench), float32 elsewhere",
    )
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
    fhir_token: SecretStr | None = Field(default=None, description="static bearer token (or OAuth2 below)")
    fhir_ca_bundle: Path | None = None
    fhir_token_url: str | None = Field(
        default=None, description="OAuth2 client credentials token endpoint (SMART Backend Services)"
    )
    fhir_client_id: str | None = None
    fhir_client_secret: SecretStr | None = Field(default=None, description="client secret (HTTP Basic)")
    fhir_private_key_file: Path | None = Field(
        default=None, description="PEM key (RSA or P-384) signing the private_key_jwt assertion (RS384/ES384)"
    )
    fhir_key_id: str | None = Field(default=None, description="kid of the assertion (the key in the JWKS)")
    fhir_scope: str | None = Field(default=None, description="scopes asked for, e.g. system/DiagnosticReport.cu")
    fhir_client_cert: Path | None = Field(default=None, description="mutual TLS: client certificate (PEM)")
    fhir_client_key: Path | None = Field(default=None, description="mutual TLS: its private key (PEM)")

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

    @field_validator("model_url", "fhir_url", "fhir_token_url", "kafka_oauth_token_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # a malformed URL would otherwise be retried for ever as if the server were down
        if value is None:
            return value
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        try:
            parts.port
        except ValueError:
            raise ValueError("the URL's port is not a number") from None
        return value.strip()

    @field_validator("kafka_options", mode="before")
    @classmethod
    def _kafka_options(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k).lower(): typed_kafka_option(str(k).lower(), v) for k, v in value.items()}
        return value

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
        refuse_unknown_variables(os.environ, settings_cls)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, KafkaOptionsSource(settings_cls)]
        config_file = os.environ.get("RADBRIDGE_CONFIG_FILE")
        if config_file:
            if not Path(config_file).is_file():  # a typo here would otherwise run on defaults, silently
                raise ConfigurationError(f"RADBRIDGE_CONFIG_FILE {config_file} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def public_dict(self) -> dict:
        """Settings safe to print or log: secrets stay masked, and so do credentials inside URLs."""
        from .redact import mask_url

        out = self.model_dump(mode="json")
        for key in ("model_url", "fhir_url", "kafka_bootstrap", "fhir_token_url", "kafka_oauth_token_url"):
            out[key] = mask_url(out.get(key))
        # a passthrough value may be a URL with credentials (proxy_url)
        out["kafka_options"] = {k: mask_url(v) if isinstance(v, str) and "://" in v else v
                                for k, v in out.get("kafka_options", {}).items()}
        return out


# --- fail-safe configuration ---------------------------------------------------------------------------------

#: variables with the prefix that are not settings (the config file's path; the test suite's switches)
NOT_SETTINGS = frozenset({"RADBRIDGE_CONFIG_FILE", "RADBRIDGE_UPDATE_GOLDEN", "RADBRIDGE_FUZZ_EXAMPLES",
                          "RADBRIDGE_FUZZ_RANDOM"})
#: RADBRIDGE_KAFKA_OPT_<NAME>=value passes kafka-python's <name> (lower case) to the consumer and the producer
KAFKA_OPT_PREFIX = "RADBRIDGE_KAFKA_OPT_"


def refuse_unknown_variables(environ: Mapping[str, str], settings_cls: type[BaseSettings]) -> None:
    """A mistyped RADBRIDGE_* variable is refused, naming it: ignored, it would run the service on a default
    (e.g. the embedded broker instead of the site's cluster) that looks healthy."""
    known = {f"RADBRIDGE_{name.upper()}" for name in settings_cls.model_fields} | NOT_SETTINGS
    unknown = sorted(
        name for name in (n.upper() for n in environ)
        if name.startswith("RADBRIDGE_") and name not in known and not name.startswith(KAFKA_OPT_PREFIX)
    )
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known - NOT_SETTINGS), n=1, cutoff=0.75)
        hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
    raise ConfigurationError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(hints)}")


class KafkaOptionsSource(PydanticBaseSettingsSource):
    """``kafka_options`` from RADBRIDGE_KAFKA_OPT_<NAME> variables, one per kafka-python setting."""

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        options = {name[len(KAFKA_OPT_PREFIX):].lower(): value for name, value in
                   ((n.upper(), v) for n, v in os.environ.items()) if name.startswith(KAFKA_OPT_PREFIX)}
        return {"kafka_options": options} if options else {}


#: kafka-python settings radbridge owns: a dedicated setting, or the delivery guarantee depends on them
_KAFKA_OWNED = {
    "bootstrap_servers": "RADBRIDGE_KAFKA_BOOTSTRAP", "group_id": "RADBRIDGE_GROUP_ID",
    "security_protocol": "RADBRIDGE_SECURITY_PROTOCOL", "sasl_mechanism": "RADBRIDGE_SASL_MECHANISM",
    "sasl_plain_username": "RADBRIDGE_SASL_USERNAME", "sasl_plain_password": "RADBRIDGE_SASL_PASSWORD",
    "ssl_cafile": "RADBRIDGE_SSL_CAFILE", "ssl_certfile": "RADBRIDGE_SSL_CERTFILE",
    "ssl_keyfile": "RADBRIDGE_SSL_KEYFILE", "ssl_password": "RADBRIDGE_SSL_PASSWORD",
    "max_poll_records": "RADBRIDGE_BATCH_SIZE", "session_timeout_ms": "RADBRIDGE_SESSION_TIMEOUT_MS",
    "heartbeat_interval_ms": "RADBRIDGE_HEARTBEAT_INTERVAL_MS",
    "max_poll_interval_ms": "RADBRIDGE_MAX_POLL_INTERVAL_MS",
    "auto_offset_reset": "RADBRIDGE_AUTO_OFFSET_RESET", "sasl_oauth_token_provider": "RADBRIDGE_KAFKA_OAUTH_TOKEN_URL",
    "enable_auto_commit": "nothing (offsets are committed only once the output is durable)",
}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def typed_kafka_option(name: str, value: Any) -> Any:
    """``value`` as the type of kafka-python's own default for ``name``; names it does not know are refused."""
    from kafka import KafkaConsumer, KafkaProducer

    defaults = {**KafkaProducer.DEFAULT_CONFIG, **KafkaConsumer.DEFAULT_CONFIG}
    if name not in defaults:
        close = difflib.get_close_matches(name, sorted(defaults), n=1, cutoff=0.75)
        hint = f" (did you mean {KAFKA_OPT_PREFIX}{close[0].upper()}?)" if close else ""
        raise ValueError(f"kafka-python has no setting {name!r}{hint}")
    if name in _KAFKA_OWNED:
        raise ValueError(f"kafka-python's {name} is set by {_KAFKA_OWNED[name]}")
    if name == "acks":
        if str(value).strip().lower() not in ("all", "-1"):  # fewer acks: a commit could pass an output not yet durable
            raise ValueError("kafka-python's acks must stay 'all': radbridge commits only durable outputs")
        return "all"
    if not isinstance(value, str):
        return value  # from the TOML file: already typed
    text = value.strip()
    default = defaults[name]
    if name == "api_version":
        try:
            return tuple(int(p) for p in text.split("."))
        except ValueError:
            raise ValueError(f"kafka-python's api_version: expected a version like 3.0, got {text!r}") from None
    try:
        if isinstance(default, bool):
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ValueError(f"kafka-python's {name} expects {type(default).__name__}, got {text!r}") from None
    if default is None or isinstance(default, str):
        if name.endswith(("serializer", "deserializer", "_context", "_provider", "_callback")):
            raise ValueError(f"kafka-python's {name} is an object and cannot be set from text")
        return text
    raise ValueError(f"kafka-python's {name} is a {type(default).__name__} and cannot be set from text")
