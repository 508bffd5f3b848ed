"""`radbridge audit` over a Kafka topic (embedded broker) and a FHIR server (sekmet): read only, resumable."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from audit_messages import CASES, cxr_fhir, cxr_oru  # noqa: E402
from kafka_support import committed, publish, read_topic  # noqa: E402

from radbridge.adapters.fhir_server.store import HttpFhirStore  # noqa: E402
from radbridge.cli import app  # noqa: E402

pytestmark = pytest.mark.integration
MANIFEST = Path(__file__).resolve().parents[2] / "model" / "manifest.json"


def audit_cli(*args, **env):
    env = {"RADBRIDGE_MANIFEST_FILE": str(MANIFEST), **env}
    result = CliRunner().invoke(app, ["audit", "--backend", "instant", *map(str, args)], env=env)
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def keys(out: Path) -> list[str]:
    return [json.loads(line)["key"] for line in (out / "cases.jsonl").read_text().splitlines()]


def test_topic_audit_between_times_never_commits_and_resumes(broker, tmp_path):
    topic = "radiology-history"
    broker.create_topics([topic], partitions=2)
    old = [cxr_oru(i, *CASES[i % len(CASES)]) for i in range(5)]
    ct = cxr_oru(50, "No hemorrhage.", "Normal head CT.", code="70450", name="CT HEAD", section="CT")
    publish(broker.bootstrap, topic, old + [ct, b"garbage, not a message"])
    time.sleep(1.2)
    since = datetime.now(timezone.utc)
    time.sleep(0.2)
    new = [cxr_oru(i, *CASES[i % len(CASES)]) for i in range(100, 104)]
    publish(broker.bootstrap, topic, new)
    read_topic(broker.bootstrap, topic, expect=11)
    env = {"RADBRIDGE_KAFKA_BOOTSTRAP": broker.bootstrap}

    code, everything = audit_cli("--topic", topic, "--out", tmp_path / "all", **env)
    assert code == 0, everything
    assert everything["audited"] == 9 and everything["read"] == 10
    assert everything["skipped_by_reason"] == {"out_of_scope": 1, "unreadable": 1}
    sources = [json.loads(l)["source"] for l in (tmp_path / "all" / "cases.jsonl").read_text().splitlines()]
    assert all(s.startswith(f"kafka:{topic}/") for s in sources)

    code, recent = audit_cli("--topic", topic, "--since", since.isoformat(), "--out", tmp_path / "recent", **env)
    assert code == 0 and recent["audited"] == 4 and recent["skipped"] == 0
    assert set(keys(tmp_path / "recent")) < set(keys(tmp_path / "all"))

    code, again = audit_cli("--topic", topic, "--out", tmp_path / "all", **env)  # a second run drafts nothing
    assert code == 0 and again["resumed_cases"] == 9 and again["drafted_this_run"] == 0 and again["audited"] == 9
    # read with no consumer group: neither the live group nor any other has offsets on the topic
    assert committed(broker.bootstrap, "radbridge", topic) == {}
    assert committed(broker.bootstrap, "radbridge-audit", topic) == {}


def test_fhir_server_audit_pages_through_final_radiology_reports_by_date(sekmet_fhir, tmp_path):
    from radbridge.audit.run import audit
    from radbridge.audit.sources import FhirServerSource
    from radbridge.pipeline import Drafter, Mode
    from radbridge.adapters.model.memory import InstantGenerator
    from radbridge.scope import Scope

    def put(resource: dict) -> dict:
        return {"resource": resource, "request": {"method": "PUT", "url": f"DiagnosticReport/{resource['id']}"}}

    reports = []
    for i in range(7):
        r = json.loads(cxr_fhir(7000 + i, *CASES[i % len(CASES)]))
        r["effectiveDateTime"] = f"2024-03-{10 + i:02d}T09:00:00Z"
        r.pop("subject")  # the test server checks references; the audit does not need the patient
        reports.append(r)
    prelim = json.loads(cxr_fhir(7100, *CASES[1], status="preliminary"))
    early = json.loads(cxr_fhir(7101, *CASES[2]))
    early["effectiveDateTime"] = "2023-01-01T09:00:00Z"
    for r in (prelim, early):
        r.pop("subject")
    store = HttpFhirStore(sekmet_fhir.base_url)
    store.transact({"resourceType": "Bundle", "type": "transaction", "entry": [put(r) for r in reports + [prelim, early]]})

    since, until = datetime(2024, 3, 1, tzinfo=timezone.utc), datetime(2024, 4, 1, tzinfo=timezone.utc)
    before = len(store.search("DiagnosticReport", [("_count", "100")]))
    source = FhirServerSource(HttpFhirStore(sekmet_fhir.base_url, max_pages=1000), sekmet_fhir.base_url,
                              since=since, until=until, page_size=2)  # four pages
    drafter = Drafter(InstantGenerator(), mode=Mode.REPLAY,
                      scope=Scope.from_manifest(json.loads(MANIFEST.read_text())["scope"]))
    run = audit(source, drafter, tmp_path / "out")
    assert run["counts"]["audited"] == 7 and run["counts"]["read"] == 7  # not the preliminary, not the 2023 one
    cases = [json.loads(l) for l in (tmp_path / "out" / "cases.jsonl").read_text().splitlines()]
    assert [c["date"][:10] for c in cases] == [f"2024-03-{10 + i:02d}" for i in range(7)]
    assert {c["accession"] for c in cases} == {f"FACC{7000 + i:05d}" for i in range(7)}
    assert run["source"]["kind"] == "fhir" and "status=final" in run["source"]["query"]
    # nothing written to the server
    assert len(store.search("DiagnosticReport", [("_count", "100")])) == before

    code, out = audit_cli("--fhir-url", sekmet_fhir.base_url, "--since", "2024-03-01", "--until", "2024-04-01",
                          "--out", tmp_path / "cli")
    assert code == 0 and out["audited"] == 7


def test_topic_audit_by_offsets_reads_exactly_that_range(broker, tmp_path):
    topic = "radiology-history-offsets"
    broker.create_topics([topic], partitions=1)
    publish(broker.bootstrap, topic, [cxr_oru(200 + i, *CASES[i % len(CASES)]) for i in range(8)])
    read_topic(broker.bootstrap, topic, expect=8)
    env = {"RADBRIDGE_KAFKA_BOOTSTRAP": broker.bootstrap}
    code, part = audit_cli("--topic", topic, "--offsets", "0:2-5", "--out", tmp_path / "range", **env)
    assert code == 0, part
    sources = [json.loads(l)["source"] for l in (tmp_path / "range" / "cases.jsonl").read_text().splitlines()]
    assert sources == [f"kafka:{topic}/0@{o}" for o in (2, 3, 4)]
    code, bad = audit_cli("--topic", topic, "--offsets", "0:5-2", "--out", tmp_path / "bad", **env)
    assert code != 0 and "PARTITION:FIRST-END" in json.dumps(bad)


def test_a_broker_that_goes_away_mid_audit_stops_the_run_resumably(tmp_path):
    import threading

    from radbridge.adapters.kafka.broker import EmbeddedBroker

    topic = "radiology-history-outage"
    with EmbeddedBroker() as own:
        own.create_topics([topic], partitions=1)
        publish(own.bootstrap, topic, [cxr_oru(300 + i, *CASES[i % len(CASES)]) for i in range(4)])
        read_topic(own.bootstrap, topic, expect=4)
        result: dict = {}
        env = {"RADBRIDGE_KAFKA_BOOTSTRAP": own.bootstrap}
        runner = threading.Thread(target=lambda: result.update(zip(("code", "out"), audit_cli(
            "--topic", topic, "--batch-size", 1, "--out", tmp_path / "outage", **env))))
        runner.start()
        cases = tmp_path / "outage" / "cases.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (cases.exists() and len(cases.read_text().splitlines()) == 4):
            time.sleep(0.1)
        own._proc.kill()  # the history was read; the run is waiting for more when the broker dies
        own._proc.wait(10)
        runner.join(90)
    assert not runner.is_alive()
    assert result["code"] == 2 and result["out"]["error"] == "source_unavailable"
    assert "run the same command again" in result["out"]["reason"]
    run = json.loads((tmp_path / "outage" / "run.json").read_text())
    assert run["status"] == "interrupted" and len(cases.read_text().splitlines()) == 4  # nothing finished is lost
