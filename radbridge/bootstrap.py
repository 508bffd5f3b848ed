"""The one wiring point: settings in, a ready Drafter, its generator and FHIR store, and the Kafka service out.

Nothing connects or loads a model at import time; everything is built here on request.
"""

from __future__ import annotations

from pathlib import Path

from .domain import GenerationParams
from .errors import ConfigurationError
from .pipeline import Drafter, Mode
from .ports import ExampleSource, FhirStore, Generator
from .prompt import DEFAULT_TEMPLATE, PromptTemplate
from .retry import RetryingGenerator, RetryPolicy
from .limits import Limits
from .scope import Scope
from .settings import SHIPPED_MODEL_DIR, Settings


def local_adapter(settings: Settings) -> Path | None:
    """The PEFT folder the local backend loads: RADBRIDGE_ADAPTER, else the shipped model/, else none."""
    if settings.no_adapter:
        return None
    if settings.adapter:
        path = Path(settings.adapter)
        if not (path / "adapter_config.json").is_file():
            raise ConfigurationError(f"adapter folder {path} has no adapter_config.json (PEFT format expected)")
        return path
    return SHIPPED_MODEL_DIR if (SHIPPED_MODEL_DIR / "adapter_config.json").is_file() else None


def build_generator(settings: Settings, *, retry: RetryPolicy | None = None) -> Generator:
    """The configured backend, trying each call once; ``retry`` (CLI commands) wraps it in bounded retries.

    The service passes none: its loop is the one that backs off, with partitions paused and polling on.
    """
    generator = _backend(settings)
    return RetryingGenerator(generator, retry) if retry is not None else generator


def local_dtype(settings: Settings) -> str:
    # int8 quantises float32 weights: with RADBRIDGE_LOCAL_QUANTIZE set, "auto" means float32; naming bfloat16
    # beside it is a contradiction the model refuses (LocalModel)
    return "float32" if settings.local_quantize and settings.local_dtype == "auto" else settings.local_dtype


def _backend(settings: Settings) -> Generator:
    if settings.backend == "instant":
        from .adapters.model.memory import InstantGenerator

        return InstantGenerator()
    if settings.backend == "local":
        from .adapters.model.local import LocalGenerator

        adapter = local_adapter(settings)
        if adapter is not None and (adapter / "manifest.json").is_file():
            # a released adapter: refuse to run if its files differ from the manifest's hashes
            return LocalGenerator.from_manifest(adapter, batch_size=settings.local_batch_size,
                                                quantize=settings.local_quantize, dtype=local_dtype(settings))
        return LocalGenerator(adapter, batch_size=settings.local_batch_size, quantize=settings.local_quantize,
                              dtype=local_dtype(settings))
    if not settings.model_url:
        raise ConfigurationError(f"backend {settings.backend} needs RADBRIDGE_MODEL_URL")
    key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
    remote = dict(adapter=settings.adapter, timeout=settings.request_timeout_s, concurrency=settings.batch_size,
                  api_key=key, ca_bundle=settings.model_ca_bundle)
    if settings.backend == "tgi":
        from .adapters.model.tgi import TgiGenerator

        return TgiGenerator(settings.model_url, **remote)
    from .adapters.model.openai import OpenAIGenerator

    return OpenAIGenerator(settings.model_url, **remote)


def prompt_template(settings: Settings) -> PromptTemplate:
    """The template the adapter was trained with (a released folder's manifest), unless settings name another."""
    if settings.prompt_template:
        return PromptTemplate.from_id(settings.prompt_template)
    if settings.backend == "local":
        adapter = local_adapter(settings)
        if adapter is not None and (adapter / "manifest.json").is_file():
            from .adapters.model.local import Manifest

            return PromptTemplate.from_id(Manifest.read(adapter).prompt_template)
    return DEFAULT_TEMPLATE


def build_examples(settings: Settings, template: PromptTemplate) -> ExampleSource | None:
    if not template.n_examples:
        return None
    from .retrieval import ExampleIndex, default_examples_file

    path = settings.examples_file or default_examples_file()
    if path is None or not Path(path).is_file():
        raise ConfigurationError(
            f"prompt template {template.id} shows example reports: set RADBRIDGE_EXAMPLES_FILE to a JSONL of signed "
            "reports (fields findings, impression)"
        )
    # the template's clean rules, as training's retriever applied them to the same kind of reports
    return ExampleIndex.from_jsonl(Path(path), template.rules)


def _manifest_path(settings: Settings) -> Path | None:
    """The manifest whose scope applies: the local adapter's; for a model server, the one settings name or the
    shipped one (the adapter a site serves is the shipped one unless it says otherwise)."""
    if settings.backend == "instant":
        return settings.manifest_file
    if settings.backend == "local":
        adapter = local_adapter(settings)
        return adapter / "manifest.json" if adapter is not None and (adapter / "manifest.json").is_file() else None
    if settings.manifest_file is not None:
        if not settings.manifest_file.is_file():
            raise ConfigurationError(f"RADBRIDGE_MANIFEST_FILE {settings.manifest_file} does not exist")
        return settings.manifest_file
    shipped = SHIPPED_MODEL_DIR / "manifest.json"
    return shipped if shipped.is_file() else None


def build_scope(settings: Settings) -> Scope:
    """The adapter's declared scope, widened or narrowed by the site's settings."""
    from .adapters.model.local import Manifest  # the one manifest reader (no model is loaded)

    path = _manifest_path(settings)
    declared = Manifest.read(path).data.get("scope") if path is not None else None
    if declared is None and (settings.scope_codes or settings.scope_unknown):
        declared = {}  # a site may declare a scope for a model whose manifest has none
    return Scope.from_manifest(
        declared, extra_codes=settings.scope_codes, excluded_codes=settings.scope_excluded_codes,
        unknown=settings.scope_unknown,
    )


def build_drafter(settings: Settings, generator: Generator | None = None) -> Drafter:
    template = prompt_template(settings)
    if template.end_threshold_pct and settings.backend == "openai":
        # The chat API cannot continue a half-written answer, so the end rule cannot be applied from outside
        # (TGI's /generate can: adapters/model/tgi.py). Drafts would silently end earlier than measured.
        raise ConfigurationError(
            f"prompt template {template.id} ends drafts by the end-of-turn probability (+end{template.end_threshold_pct}), "
            f"which backend {settings.backend} cannot apply: use the local or tgi backend, or a template without +end"
        )
    return Drafter(
        generator or build_generator(settings),
        mode=Mode(settings.mode),
        template=template,
        params=GenerationParams(max_new_tokens=settings.max_new_tokens),
        output_status=settings.output_status,
        examples=build_examples(settings, template),
        emit_oru=settings.emit_oru,
        scope=build_scope(settings),
        limits=Limits.from_settings(settings),
    )


def build_fhir_store(settings: Settings) -> FhirStore | None:
    if not settings.fhir_url:
        return None
    from .adapters.fhir_server.auth import ClientCredentials, tls_context
    from .adapters.fhir_server.store import HttpFhirStore

    if settings.fhir_client_key and not settings.fhir_client_cert:
        raise ConfigurationError("RADBRIDGE_FHIR_CLIENT_KEY needs RADBRIDGE_FHIR_CLIENT_CERT (mutual TLS)")
    tls = tls_context(settings.fhir_ca_bundle, settings.fhir_client_cert, settings.fhir_client_key)
    auth = None
    if settings.fhir_token_url:
        if settings.fhir_token is not None:
            raise ConfigurationError("set RADBRIDGE_FHIR_TOKEN or RADBRIDGE_FHIR_TOKEN_URL (OAuth2), not both")
        if not settings.fhir_client_id:
            raise ConfigurationError("RADBRIDGE_FHIR_TOKEN_URL needs RADBRIDGE_FHIR_CLIENT_ID")
        auth = ClientCredentials(
            settings.fhir_token_url, settings.fhir_client_id, client_secret=settings.fhir_client_secret,
            private_key_file=settings.fhir_private_key_file, key_id=settings.fhir_key_id, scope=settings.fhir_scope,
            timeout=settings.request_timeout_s, verify=tls,
        )
    elif settings.fhir_client_secret or settings.fhir_private_key_file:
        raise ConfigurationError("RADBRIDGE_FHIR_CLIENT_SECRET / _PRIVATE_KEY_FILE need RADBRIDGE_FHIR_TOKEN_URL")
    return HttpFhirStore(settings.fhir_url, timeout=settings.request_timeout_s, token=settings.fhir_token, auth=auth,
                         verify=tls)


def build_service(settings: Settings, bootstrap: str, *, drafter: Drafter | None = None, fhir_store: FhirStore | None = None):
    """The Kafka consumer service (radbridge.service.loop.Service) with every part built from ``settings``."""
    import logging

    from .adapters.kafka.clients import make_consumer, make_producer
    from .errors import RetryableError
    from .formats.fhir.writer import bundle_bytes
    from .service.backoff import Backoff
    from .service.loop import Health, Service
    from .service.metrics import ServiceMetrics
    from .service.signoff import SignoffFeedback

    drafter = drafter or build_drafter(settings)
    store = fhir_store if fhir_store is not None else build_fhir_store(settings)
    health = Health(embedded_broker=settings.kafka_bootstrap is None)
    checks = {"model": drafter.generator.check}
    if callable(getattr(store, "check", None)):
        checks["fhir"] = store.check
    for dependency, check in checks.items():
        try:
            check()  # a permanent failure (wrong URL, adapter not served) refuses to start
        except RetryableError as exc:
            # it may come up after us, or its credentials be renewed: not ready, and the loop re-checks until it is
            health.failed_checks[dependency] = exc.kind
            logging.getLogger(__name__).warning(
                "dependency not reachable at start", extra={"dependency": dependency, "error_type": exc.kind})
    return Service(
        consumer=make_consumer(settings, bootstrap),
        producer=make_producer(settings, bootstrap),
        drafter=drafter,
        input_topics=settings.input_topics,
        output_topic=settings.output_topic,
        dlq_topic=settings.dlq_topic,
        serialize=bundle_bytes,
        fhir_store=store,
        checks=checks,
        batch_size=settings.batch_size,
        batch_wait_ms=settings.batch_wait_ms,
        backoff=Backoff(RetryPolicy.from_settings(settings, bounded=False)),
        metrics=ServiceMetrics(),
        health=health,
        oru_topic=settings.oru_topic,
        review_topic=settings.review_topic if settings.on_flag == "hold" else None,
        signoff=SignoffFeedback.from_settings(settings),
    )
