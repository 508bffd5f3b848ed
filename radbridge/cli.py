"""The command line: each command a few lines that call into the package."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from .settings import Backend, Settings

# No pretty tracebacks: an error a user can act on is one line (main), anything else keeps Python's traceback.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="radbridge: draft radiology impressions on-prem.")


def _settings(**overrides) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _configure_logging(level: str) -> None:
    from .logs import configure

    configure(level)


@app.command()
def draft(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="HL7 v2 or FHIR JSON files"),
    backend: Optional[Backend] = typer.Option(None, help="local | tgi | openai | instant"),
    adapter: Optional[str] = typer.Option(None, help="LoRA adapter folder (local) or adapter id (tgi/openai)"),
    url: Optional[str] = typer.Option(None, help="model server URL (tgi/openai)"),
    mode: Optional[str] = typer.Option(None, help="live (skip signed reports) | replay (draft all)"),
    oru: bool = typer.Option(False, "--oru", help="also print an HL7 v2 ORU^R01 per draft"),
) -> None:
    """Print, per input message, the output Bundle (or a skip/error record) as one JSON line."""
    from .bootstrap import build_drafter, build_generator
    from .files import draft_files
    from .retry import RetryPolicy

    settings = _settings(backend=backend, adapter=adapter, model_url=url, mode=mode, emit_oru=oru or None)
    _configure_logging(settings.log_level)
    generator = build_generator(settings, retry=RetryPolicy.from_settings(settings))
    ok = draft_files(build_drafter(settings, generator), files, out=sys.stdout)
    raise typer.Exit(0 if ok else 1)


@app.command()
def check(
    backend: Optional[Backend] = typer.Option(None),
    adapter: Optional[str] = typer.Option(None),
    url: Optional[str] = typer.Option(None),
) -> None:
    """Check the configured model backend can serve (reachable, adapter really loaded); exit 1 if not."""
    from .bootstrap import build_generator
    from .errors import RadbridgeError
    from .retry import RetryPolicy

    settings = _settings(backend=backend, adapter=adapter, model_url=url)
    _configure_logging(settings.log_level)
    generator = build_generator(settings, retry=RetryPolicy.from_settings(settings))
    try:
        generator.check()
    except RadbridgeError as exc:
        typer.echo(json.dumps({"ok": False, "error": exc.kind, "reason": str(exc)}))
        raise typer.Exit(1)
    info = generator.info
    typer.echo(json.dumps({"ok": True, "backend": info.backend, "base_model": info.base_model, "adapter": info.adapter}))


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets masked)."""
    typer.echo(json.dumps(Settings().public_dict(), indent=2, default=str))


@app.command()
def serve(
    backend: Optional[Backend] = typer.Option(None, help="local | tgi | openai | instant"),
    url: Optional[str] = typer.Option(None, help="model server URL (tgi/openai)"),
) -> None:
    """Run the Kafka service (no RADBRIDGE_KAFKA_BOOTSTRAP: the embedded broker on 127.0.0.1)."""
    from .service.runner import serve as run_service

    settings = _settings(backend=backend, model_url=url)
    _configure_logging(settings.log_level)
    run_service(settings)


@app.command()
def publish(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="HL7 v2 or FHIR JSON files"),
    topic: Optional[str] = typer.Option(None, help="default: the first of RADBRIDGE_INPUT_TOPICS"),
) -> None:
    """Send files to a topic, one record per file (default broker: the embedded one of `radbridge serve`)."""
    from .service.publish import publish_files
    from .service.runner import bootstrap_address

    settings = _settings()
    sent = publish_files(settings, bootstrap_address(settings), topic or settings.input_topics[0], files)
    typer.echo(json.dumps({"published": sent, "topic": topic or settings.input_topics[0]}))


@app.command()
def demo(
    backend: Optional[Backend] = typer.Option(None, help="default: local (the real model)"),
    openi: int = typer.Option(6, help="OpenI reports from ../shared to add to the project's fixtures"),
) -> None:
    """Start the embedded broker and the service, publish sample messages, print each draft as it arrives."""
    from .demo import demo_samples, run_demo

    settings = _settings(backend=backend, embedded_port=0, metrics_port=0, log_level="ERROR")
    _configure_logging(settings.log_level)
    run_demo(settings, demo_samples(openi))


@app.command("serve-model")
def serve_model(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8080),
    lora_adapters: Optional[str] = typer.Option(
        None, envvar="LORA_ADAPTERS",
        help="name=/path,... like TGI's LORA_ADAPTERS; default: radiology=RADBRIDGE_ADAPTER (local) or model/",
    ),
    max_batch_size: Optional[int] = typer.Option(
        None, help="concurrent requests generated together; default: RADBRIDGE_LOCAL_BATCH_SIZE"
    ),
    batch_wait_ms: float = typer.Option(5.0, help="how long the first waiting request waits for others"),
    max_concurrent_requests: int = typer.Option(128, help="more in flight: 429 overloaded, as TGI"),
    max_total_tokens: int = typer.Option(2048, help="prompt + new tokens per request, as TGI"),
    threads: Optional[int] = typer.Option(None, help="torch threads (default: torch's choice)"),
    log_level: Optional[str] = typer.Option(None, help="default: RADBRIDGE_LOG_LEVEL"),
    api_key: Optional[str] = typer.Option(
        None, help="require 'Authorization: Bearer KEY' (default: RADBRIDGE_MODEL_API_KEY; needed off 127.0.0.1)"
    ),
) -> None:
    """Serve the local model over TGI's HTTP protocol (/generate, /v1/chat/completions, /info, /health)."""
    from .adapters.model.server import parse_adapters, serve
    from .bootstrap import local_adapter

    settings = _settings(local_batch_size=max_batch_size, log_level=log_level)
    _configure_logging(settings.log_level)
    if lora_adapters:
        adapters = parse_adapters(lora_adapters)
    else:
        # RADBRIDGE_ADAPTER names a folder only for the local backend (for tgi/openai: an id on another server)
        local = settings if settings.backend == "local" else settings.model_copy(update={"adapter": None})
        folder = local_adapter(local)
        adapters = {"radiology": str(folder)} if folder else {}
    key = api_key or (settings.model_api_key.get_secret_value() if settings.model_api_key else None)
    try:
        serve(host, port, adapters, max_batch_size=settings.local_batch_size, batch_wait_ms=batch_wait_ms,
              max_concurrent_requests=max_concurrent_requests, max_total_tokens=max_total_tokens, threads=threads,
              log_level=settings.log_level, api_key=key)
    except ValueError as exc:  # a refused configuration: one line, not a traceback
        typer.echo(f"radbridge serve-model: {exc}", err=True)
        raise typer.Exit(2)


@app.command("eval")
def eval_cmd(
    data: Path = typer.Option(..., exists=True, dir_okay=False, help="JSONL with findings and impression"),
    out: Path = typer.Option(..., help="results JSON"),
    limit: Optional[int] = typer.Option(None, help="first N reports only"),
    baseline: Optional[str] = typer.Option(None, help="constant | retrieval | consensus (no model)"),
    train: Optional[Path] = typer.Option(None, help="JSONL of training reports (retrieval baseline and examples)"),
    adapter: Optional[str] = typer.Option(None, help="model folder with manifest, PEFT folder, or 'none'; default model/"),
    template: Optional[str] = typer.Option(None, help="prompt template id; default: the adapter's manifest"),
    batch_size: int = typer.Option(8),
    max_new_tokens: Optional[int] = typer.Option(None, help="default: RADBRIDGE_MAX_NEW_TOKENS (as the service)"),
    backend: Optional[Backend] = typer.Option(None, help="local | tgi | openai (a model server serving the adapter by name)"),
    url: Optional[str] = typer.Option(None, help="model server URL (tgi/openai)"),
) -> None:
    """Score drafts (model or baseline) against the reports' own impressions: ROUGE, clinical F1, laterality."""
    from .bootstrap import build_generator
    from .evaluation import run, summary_line
    from .retry import RetryPolicy

    no_adapter = adapter == "none" or None
    settings = _settings(backend=backend, model_url=url, adapter=None if no_adapter else adapter, no_adapter=no_adapter,
                         prompt_template=template, max_new_tokens=max_new_tokens, examples_file=train,
                         local_batch_size=batch_size, batch_size=batch_size)
    generator = None if baseline else build_generator(settings, retry=RetryPolicy.from_settings(settings))
    result = run(settings, data, out, limit=limit, baseline=baseline, train=train, batch_size=batch_size,
                 generator=generator)
    typer.echo(summary_line(result))


@app.command()
def audit(
    sources: list[Path] = typer.Argument(None, exists=True, help="HL7 v2 / FHIR files or folders of signed reports"),
    out: Path = typer.Option(..., help="audit folder (created; the same folder again resumes)"),
    topic: Optional[str] = typer.Option(None, help="audit a Kafka topic instead (no consumer group, nothing committed)"),
    fhir_url: Optional[str] = typer.Option(None, help="audit a FHIR server's final radiology DiagnosticReports instead"),
    since: Optional[datetime] = typer.Option(None, help="topic: record time; FHIR: report date (from)"),
    until: Optional[datetime] = typer.Option(None, help="topic: record time; FHIR: report date (before)"),
    offsets: Optional[str] = typer.Option(None, help="topic: PARTITION:FIRST-END,... (END exclusive, empty: to the end)"),
    backend: Optional[Backend] = typer.Option(None, help="local | tgi | openai | instant"),
    adapter: Optional[str] = typer.Option(None, help="LoRA adapter folder (local) or adapter id (tgi/openai)"),
    url: Optional[str] = typer.Option(None, help="model server URL (tgi/openai)"),
    template: Optional[str] = typer.Option(None, help="prompt template id; default: the adapter's manifest"),
    modality: list[str] = typer.Option([], help="only these modalities (OBR-24 / category code); repeatable"),
    procedure: list[str] = typer.Option([], help="only these procedure codes or name words; repeatable"),
    limit: Optional[int] = typer.Option(None, help="the first N eligible reports"),
    sample: Optional[int] = typer.Option(None, help="N eligible reports drawn at random (with --seed)"),
    seed: int = typer.Option(0),
    batch_size: Optional[int] = typer.Option(None, help="reports drafted together; default RADBRIDGE_BATCH_SIZE"),
    bundles: bool = typer.Option(False, "--bundles", help="also write each draft's FHIR Bundle to DIR/bundles/ (replay)"),
) -> None:
    """Draft every signed in-scope report (replay) beside its signed impression: cases.csv/jsonl, run.json, report.html."""
    from .audit.report_html import write_report
    from .audit.run import Filters, NothingAudited, audit as run_audit
    from .audit.sources import audit_source
    from .bootstrap import build_drafter, build_generator
    from .errors import RadbridgeError
    from .retry import RetryPolicy

    settings = _settings(backend=backend, adapter=adapter, model_url=url, prompt_template=template, mode="replay")
    _configure_logging(settings.log_level)
    drafter = build_drafter(settings, build_generator(settings, retry=RetryPolicy.from_settings(settings)))
    filters = Filters(tuple(modality), tuple(procedure), limit, sample, seed)
    try:
        source = audit_source(settings, sources or [], topic=topic, fhir_url=fhir_url, since=since, until=until,
                              offsets=offsets)
        record = run_audit(source, drafter, out, filters=filters, batch_size=batch_size or settings.batch_size,
                           bundles=bundles)
    except NothingAudited as exc:
        write_report(out)
        typer.echo(json.dumps({"ok": False, "out": str(out), "reason": str(exc)}))
        raise typer.Exit(1)
    except RadbridgeError as exc:
        again = " (finished cases are kept: run the same command again to continue)" if exc.retryable else ""
        typer.echo(json.dumps({"ok": False, "out": str(out), "error": exc.kind, "reason": str(exc) + again}))
        raise typer.Exit(2)
    write_report(out)
    typer.echo(json.dumps({"ok": True, "out": str(out), **record["counts"]}))


def fail_line(exc: BaseException) -> str | None:
    """One line for an error the user can act on (bad setting, unreachable or refusing dependency), else None."""
    from pydantic import ValidationError

    from .errors import RadbridgeError
    from .redact import mask_urls_in

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ())]
        if first.get("type") == "extra_forbidden" and loc:  # a key of the TOML config file no setting has
            import difflib

            close = difflib.get_close_matches(loc[0], list(Settings.model_fields), n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"radbridge: configuration: unknown setting {loc[0]} in RADBRIDGE_CONFIG_FILE{hint}"
        # the environment variable a user would edit (its dotted path below it, e.g. a list index)
        where = f"RADBRIDGE_{loc[0].upper()}" + "".join(f".{p}" for p in loc[1:]) if loc else "settings"
        message = str(first.get("msg", "")).removeprefix("Value error, ")
        return f"radbridge: invalid setting {where}: {message}"
    if isinstance(exc, RadbridgeError):
        return f"radbridge: {exc.kind}: {mask_urls_in(str(exc))}"
    try:
        from kafka.errors import KafkaError
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, KafkaError):  # a broker refusing or gone mid-command (publish, audit --topic)
        return f"radbridge: kafka: {type(exc).__name__}: {mask_urls_in(str(exc).splitlines()[0] if str(exc) else '')}"
    return None


@app.command("audit-compare")
def audit_compare(
    dir_a: Path = typer.Argument(..., exists=True, file_okay=False, help="an audit folder (A)"),
    dir_b: Path = typer.Argument(..., exists=True, file_okay=False, help="an audit folder of the same history (B)"),
    out: Path = typer.Option(..., help="folder for compare.html, compare.csv, compare.json"),
    resamples: int = typer.Option(2000, help="paired bootstrap resamples"),
) -> None:
    """Two audits of the same history: paired bootstrap (ROUGE-L, clinical F1, flag rates), cases that changed most."""
    from .audit.compare import compare, write

    try:
        result = compare(dir_a, dir_b, resamples=resamples)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(json.dumps({"ok": False, "reason": str(exc)}))
        raise typer.Exit(1)
    write(result, out)
    typer.echo(json.dumps({"ok": True, "out": str(out), "shared": result["shared"], **{
        k: {"a": f["a"], "b": f["b"], "diff": f["diff"], "ci95": f["ci95"]} for k, f in result["figures"].items()}}))


@app.command("feedback-report")
def feedback_report(
    topic: str = typer.Option(..., help="the feedback topic (RADBRIDGE_FEEDBACK_TOPIC); read without a consumer group"),
    out: Path = typer.Option(..., help="folder for report.html and the CSV files"),
    since: Optional[datetime] = typer.Option(None, help="record time (from)"),
    until: Optional[datetime] = typer.Option(None, help="record time (before)"),
) -> None:
    """Sign-off feedback: acceptance by week, procedure and adapter version, the most edited cases (ids only)."""
    from .audit.sources import audit_source
    from .feedback_report import load, write_report

    settings = _settings()
    _configure_logging(settings.log_level)
    source = audit_source(settings, [], topic=topic, since=since, until=until)
    records = load(item.data for item in source.envelopes())
    period = f"{topic} · {since or 'start'} to {until or 'now'}"
    typer.echo(json.dumps({"ok": True, "out": str(out), **write_report(records, out, period=period)}))

def main(argv: list[str] | None = None) -> None:  # pragma: no cover - exercised through the console script in tests
    """The console script (and ``python -m radbridge.service``): a refused setting or an unreachable dependency
    is one line on stderr and exit 2."""
    logging.captureWarnings(True)
    try:
        app(args=argv, prog_name="radbridge")
    except Exception as exc:
        line = fail_line(exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        raise SystemExit(2) from None
