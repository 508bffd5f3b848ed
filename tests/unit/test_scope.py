"""Scope rules: which reports the chest-radiograph adapter may draft for, and which rule decided."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radbridge.domain import Coding, Report, SourceRef
from radbridge.scope import Scope

MANIFEST = json.loads((Path(__file__).resolve().parents[2] / "model" / "manifest.json").read_text())


def report(code=None, system=None, name=None, modality=None) -> Report:
    proc = Coding(system=system, code=code, display=name) if (code or name) else None
    return Report(source=SourceRef(format="hl7v2", sha256="0" * 64), status="preliminary", procedure=proc, modality=modality)


@pytest.fixture
def chest() -> Scope:
    return Scope.from_manifest(MANIFEST["scope"])


@pytest.mark.parametrize(
    "kwargs,expected,rule",
    [
        (dict(code="71046", system="C4", name="XR CHEST 2 VIEWS", modality="RAD"), True, "code"),
        (dict(code="36643-5", system="http://loinc.org", name="XR Chest 2 Views"), True, "code"),
        (dict(code="LOCAL9", name="CHEST PA AND LATERAL"), True, "name"),
        (dict(code="74177", system="C4", name="CT ABDOMEN AND PELVIS WITH CONTRAST", modality="CT"), False, "name"),
        (dict(code="70450", name="CT HEAD WO CONTRAST"), False, "name"),
        (dict(code="73721", name="MRI KNEE LEFT"), False, "name"),
        (dict(code="76700", name="US ABDOMEN"), False, "name"),
        (dict(code="HAND", name="XR HAND 3 VIEWS"), False, "name"),
        (dict(code="71250", name="CT CHEST WITH CONTRAST"), False, "name"),
        (dict(code="X1", modality="CT"), False, "modality"),
        (dict(code="X1", modality="RAD"), False, "unknown"),
        (dict(), False, "unknown"),
    ],
)
def test_chest_radiograph_scope(chest, kwargs, expected, rule):
    decision = chest.decide(report(**kwargs))
    assert (decision.in_scope, decision.rule) == (expected, rule), decision.detail


def test_the_decision_names_what_it_saw(chest):
    d = chest.decide(report(code="70450", name="CT HEAD WO CONTRAST", modality="CT"))
    assert "70450" in d.detail and "names CT" in d.detail and d.detail.startswith("rule name")
    assert "HEAD" not in d.detail  # our word for what decided, never the sender's spelling of the name


def test_a_site_widens_with_its_own_codes_and_narrows_by_excluding(chest):
    widened = Scope.from_manifest(MANIFEST["scope"], extra_codes=["RIS|CXR2V"])
    assert widened.decide(report(code="CXR2V", system="RIS")).in_scope
    assert not chest.decide(report(code="CXR2V", system="RIS")).in_scope
    narrowed = Scope.from_manifest(MANIFEST["scope"], excluded_codes=["71045"])
    d = narrowed.decide(report(code="71045", name="XR CHEST 1 VIEW"))
    assert (d.in_scope, d.rule) == (False, "code")


def test_unknown_procedures_follow_the_site_rule():
    drafting = Scope.from_manifest(MANIFEST["scope"], unknown="draft")
    d = drafting.decide(report())
    assert (d.in_scope, d.rule) == (True, "unknown")


def test_an_adapter_without_a_declared_scope_drafts_everything():
    assert Scope().decide(report(name="CT HEAD")).in_scope
