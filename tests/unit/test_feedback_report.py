"""The sign-off feedback report: records from the service, tables and the self-contained page."""

from __future__ import annotations

import csv
import json

from radbridge.adapters.fhir_server.store import MemoryFhirStore
from radbridge.feedback_report import load, write_report

from test_signoff import _feedback, _run, prelim, signed


def _records() -> list[bytes]:
    _, _, producer = _run(
        [prelim("A1"), signed("A1", "Small right pleural effusion."),  # accepted
         prelim("A2"), signed("A2", "Small left pleural effusion."),  # light edit
         prelim("A3"), signed("A3", "Right upper lobe mass, recommend CT chest."),  # replaced
         signed("A4")],  # no draft
        MemoryFhirStore())
    return [raw for _, _, raw in _feedback(producer)]


def test_report_tables_count_each_sign_off_once_and_show_ids_only(tmp_path):
    raw = _records()
    records = load([*raw, raw[0], b"not json", json.dumps({"type": "draft-retired"}).encode()])
    assert len(records) == 4  # the duplicate and the foreign records are dropped
    counts = write_report(records, tmp_path)
    assert counts == {"signed": 4, "accepted": 1, "light_edit": 1, "heavy_edit": 0, "replaced": 1, "no_draft": 1,
                      "no_impression": 0}

    (adapter,) = [r for r in csv.DictReader((tmp_path / "by_adapter.csv").open()) if r["group"] == "adapter-v2"]
    assert (adapter["compared"], adapter["accepted_rate"], adapter["accepted_or_light_rate"]) == ("3", "0.3333", "0.6667")
    (procedure,) = csv.DictReader((tmp_path / "by_procedure.csv").open())
    assert (procedure["group"], procedure["signed"], procedure["no_draft"]) == ("36643-5", "4", "1")
    assert sum(int(w["signed"]) for w in csv.DictReader((tmp_path / "by_week.csv").open())) == 4
    edited = list(csv.DictReader((tmp_path / "most_edited.csv").open()))
    assert [e["accession"] for e in edited] == ["A3", "A2", "A1"]

    html = (tmp_path / "report.html").read_text()
    assert "By adapter version" in html and "A3" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no external assets
    for text in ("pleural effusion", "Distinctive-Findings-Text", "PATIENT-ID-77"):
        assert text not in html
