"""The README's main command: the whole service on its embedded default, fed with sample radiology messages.

Starts the embedded broker and the service (local model unless told otherwise), publishes the project's own
fixtures plus a few OpenI reports from ../shared (when present), prints each draft next to its findings as it
arrives, and exits cleanly. Report text is printed to the terminal on purpose here; it never goes to the logs.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .domain import sha256_of
from .settings import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


@dataclass
class Sample:
    name: str
    data: bytes
    findings: str | None


def _findings(data: bytes) -> str | None:
    from .domain import Report
    from .errors import RadbridgeError
    from .reading import read_payload

    try:
        for item in read_payload(data)[1]:
            if isinstance(item, Report) and item.findings:
                return item.findings
    except RadbridgeError:
        return None
    return None


def demo_samples(openi: int = 6, fixtures: Path = FIXTURES) -> list[Sample]:
    from .samples import sample_messages

    # the project's own input messages (not tests/fixtures/golden, which holds expected outputs)
    files = sorted(p for folder in ("hl7v2", "fhir") for p in (fixtures / folder).glob("*") if p.is_file())
    items = [(p.name, p.read_bytes()) for p in files]
    items += list(sample_messages(openi)) if openi else []
    return [Sample(name, data, _findings(data)) for name, data in items]


def _impression(bundle: dict) -> str:
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "DiagnosticReport":
            return resource.get("conclusion", "")
    return ""


def _checks(bundle: dict) -> str:
    """The checker's findings on the draft (DetectedIssue details), one per line; "none" when it found nothing."""
    issues = [
        f"{e['resource'].get('severity', '')}: {e['resource'].get('detail', '')}"
        for e in bundle.get("entry", [])
        if e.get("resource", {}).get("resourceType") == "DetectedIssue"
    ]
    return "\n".join(issues) or "none"


def run_demo(settings: Settings, samples: list[Sample], *, timeout_s: float = 900.0, console=None) -> dict:
    """Run the service, publish ``samples``, print drafts as they arrive; returns counts by outcome."""
    from kafka import KafkaConsumer
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    from .service.publish import publish_messages
    from .service.runner import serve

    console = console or Console()
    by_key = {sha256_of(s.data)[:32]: s for s in samples}
    started = threading.Event()
    box: dict = {}

    def on_ready(service, bootstrap, ops_port):
        box.update(service=service, bootstrap=bootstrap, ops_port=ops_port)
        started.set()

    def target():
        try:
            serve(settings, on_ready=on_ready, handle_signals=False)
        except BaseException as exc:  # shown by the main thread
            box["error"] = exc
            started.set()

    thread = threading.Thread(target=target, name="radbridge-service", daemon=True)
    console.print(f"[bold]radbridge demo[/]: backend [cyan]{settings.backend}[/], {len(samples)} messages")
    thread.start()
    started.wait(300)
    if "error" in box:
        raise box["error"]
    service, bootstrap = box["service"], box["bootstrap"]
    console.print(f"broker {bootstrap}  metrics http://127.0.0.1:{box['ops_port']}/metrics")

    reader = KafkaConsumer(
        settings.output_topic, settings.dlq_topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None, request_timeout_ms=30_000,
    )
    counts = {"drafted": 0, "skipped": 0, "rejected": 0}
    try:
        publish_messages(settings, bootstrap, settings.input_topics[0], [(s.name, s.data) for s in samples])
        started_at = time.monotonic()
        shown = 0
        while time.monotonic() - started_at < timeout_s:
            for records in reader.poll(timeout_ms=500).values():
                for record in records:
                    shown += 1
                    if record.topic == settings.dlq_topic:
                        headers = {k: v.decode() for k, v in record.headers}
                        console.print(f"[red]dead-lettered[/] {headers.get('dlq-error-type')}: {headers.get('dlq-reason')}")
                        continue
                    # records are keyed per report: <the source message's hash>-<report index>
                    sample = by_key.get(record.key.decode().rsplit("-", 1)[0])
                    table = Table(show_header=True, expand=True, box=None)
                    table.add_column("findings", ratio=3)
                    table.add_column("draft impression (preliminary)", ratio=2, style="green")
                    table.add_column("checks against the findings", ratio=2, style="yellow")
                    bundle = json.loads(record.value)
                    table.add_row((sample.findings if sample else None) or "-", _impression(bundle), _checks(bundle))
                    console.print(Panel(table, title=sample.name if sample else record.key.decode()))
            registry = service.metrics.registry
            for status in counts:
                counts[status] = int(registry.get_sample_value("radbridge_handled_total", {"status": status}) or 0)
            done = sum(counts.values())
            if done >= len(samples) and shown >= counts["drafted"] + counts["rejected"]:
                break
    finally:
        reader.close()
        service.stop()
        thread.join(60)
    reasons = {
        sample.labels["reason"]: int(sample.value)
        for metric in service.metrics.registry.collect() if metric.name == "radbridge_skipped"
        for sample in metric.samples if sample.name.endswith("_total") and sample.value
    }
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) or "none"
    console.print(
        f"[bold]done[/]: {counts['drafted']} drafted, {counts['skipped']} skipped (reports by reason: {why}), "
        f"{counts['rejected']} dead-lettered"
    )
    return counts
