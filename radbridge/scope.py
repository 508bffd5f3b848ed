"""What the model may draft for: the adapter's declared scope, and the rule that decides it per report.

A model tuned on chest radiographs writes chest-radiograph impressions whatever it is given; a head CT or a knee
MRI must not get one. The adapter's manifest declares its scope (``scope`` in ``model/manifest.json``); a site
widens or narrows it with settings (its own procedure codes), never by editing the manifest.

The rule, in order; the first that decides wins and is named in the decision:
1. ``code``: the procedure code (OBR-4, DiagnosticReport.code) is one the scope lists -> in scope; one the
   site excluded -> out.
2. ``name``: the procedure's name (code display or text) names another modality (CT, MRI, ultrasound, nuclear
   medicine, PET, mammography, fluoroscopy, angiography) or another body region (head, abdomen, knee, ...)
   -> out; it names the scope's region and either its modality or none -> in.
3. ``modality``: the diagnostic service section / modality (OBR-24, DiagnosticReport.category) is another
   specific imaging modality than the scope's (CT, MR, US, NM, ...) -> out. The scope's own modalities (DX, CR)
   and generic sections (``RAD``) do not say which body part was imaged, so they decide only for a scope that
   names no region.
4. ``unknown``: nothing above decided (no code we know, no usable name, a generic section) -> the site's
   ``RADBRIDGE_SCOPE_UNKNOWN``: ``skip`` (default: a model must not guess outside its competence) or ``draft``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .domain import Coding, Report
from .redact import safe_code

Rule = Literal["code", "name", "modality", "unknown"]

@dataclass(frozen=True)
class Scope:
    """What an adapter was trained for. ``codes`` are ``system|code`` (system may be empty: any system)."""

    description: str = ""
    codes: frozenset[str] = frozenset()
    excluded_codes: frozenset[str] = frozenset()
    modalities: frozenset[str] = frozenset()  # OBR-24 / DICOM modality codes that are this exam (DX, CR, ...)
    region: str | None = None  # regex of the body region's names, e.g. "chest|thorax|lung"
    modality_words: str | None = None  # regex of the modality's names, e.g. "x-?ray|radiograph|XR|CXR"
    unknown: Literal["skip", "draft"] = "skip"

    @classmethod
    def from_manifest(cls, data: dict | None, *, extra_codes=(), excluded_codes=(), unknown: str | None = None) -> "Scope":
        """The manifest's ``scope`` object, widened or narrowed by a site's settings."""
        data = data or {}
        codes = {_norm(c) for c in data.get("codes", [])} | {_norm(c) for c in extra_codes}
        return cls(
            description=data.get("description", ""),
            codes=frozenset(codes),
            excluded_codes=frozenset(_norm(c) for c in excluded_codes),
            modalities=frozenset(m.upper() for m in data.get("modalities", [])),
            region=data.get("region"),
            modality_words=data.get("modality_words"),
            unknown=unknown or data.get("unknown", "skip"),  # type: ignore[arg-type]
        )

    @property
    def declared(self) -> bool:
        """False for an adapter that declares no scope: then every report is drafted, as before scopes."""
        return bool(self.codes or self.modalities or self.region)

    def decide(self, report: Report) -> "ScopeDecision":
        if not self.declared:
            return ScopeDecision(True, "unknown", "no scope declared")
        proc = report.procedure or Coding()
        code = f"{proc.system or ''}|{proc.code}" if proc.code else None
        seen = _seen(proc, report.modality)
        if code is not None:
            if _match(code, self.excluded_codes):
                return ScopeDecision(False, "code", f"{seen}: excluded by the site")
            if _match(code, self.codes):
                return ScopeDecision(True, "code", f"{seen}: in the scope's codes")
        name = (proc.display or "").strip()
        if name:
            verdict, why = self._by_name(name)
            if verdict is not None:
                return ScopeDecision(verdict, "name", f"{seen}; procedure name names {why}")
        modality = (report.modality or "").upper()
        if modality in self.modalities:
            if not self.region:  # a whole-modality scope: the modality is the exam
                return ScopeDecision(True, "modality", seen)
        elif modality and modality not in _GENERIC_SECTIONS:
            return ScopeDecision(False, "modality", seen)
        return ScopeDecision(self.unknown == "draft", "unknown", seen)

    def _by_name(self, name: str) -> tuple[bool | None, str]:
        """The verdict on a procedure name, and what decided it in our words (never the sender's spelling)."""
        region = bool(self.region and re.search(rf"\b(?:{self.region})", name, re.IGNORECASE))
        own_modality = bool(self.modality_words and re.search(rf"\b(?:{self.modality_words})\b", name, re.IGNORECASE))
        other_modality = _canonical(name, _MODALITY_NAMES)
        if other_modality and not own_modality:
            return False, other_modality
        other_region = _canonical(name, _REGION_NAMES)
        if other_region and not region:
            return False, other_region
        if region and not other_modality:
            return True, "the scope's region"
        return None, ""


# Other modalities and body regions as procedure names spell them (abbreviations count only in capitals: "us" and
# "pet" are also words), each with our name for it, so a decision names our word, never the sender's text.
_MODALITY_NAMES = [
    (re.compile(r"\b(?:CAT SCAN|COMPUTED TOMOGRAPH\w*)\b", re.IGNORECASE), "CT"),
    (re.compile(r"\bCTA?\b"), "CT"),
    (re.compile(r"\bMAGNETIC RESONANCE\b", re.IGNORECASE), "MR"),
    (re.compile(r"\b(?:MRI?|MRA)\b"), "MR"),
    (re.compile(r"\b(?:ULTRASOUND|ULTRASONO\w*|SONO\w*|DOPPLER|DUPLEX)\b", re.IGNORECASE), "ultrasound"),
    (re.compile(r"\bUS\b"), "ultrasound"),
    (re.compile(r"\b(?:MAMMO\w*|TOMOSYNTHESIS)\b", re.IGNORECASE), "mammography"),
    (re.compile(r"\bFLUORO\w*\b", re.IGNORECASE), "fluoroscopy"),
    (re.compile(r"\bANGIO\w*\b", re.IGNORECASE), "angiography"),
    (re.compile(r"\b(?:SPECT|NUCLEAR MED\w*|SCINTI\w*|BONE SCAN)\b", re.IGNORECASE), "nuclear medicine"),
    (re.compile(r"\bNM\b"), "nuclear medicine"),
    (re.compile(r"\bPET\b"), "PET"),
    (re.compile(r"\bDEXA\b", re.IGNORECASE), "DXA"),
    (re.compile(r"\bDXA\b"), "DXA"),
    (re.compile(r"\b(?:ARTHROGRAM|MYELOGRAM|VENOGRAM|ESOPHAGRAM|BARIUM)\b", re.IGNORECASE), "contrast study"),
    (re.compile(r"\b(?:IVP|KUB)\b"), "abdominal radiograph"),
    (re.compile(r"\bECHO\w*\b", re.IGNORECASE), "echocardiography"),
]
_REGION_NAMES = [
    (re.compile(rf"\b(?:{words})\b", re.IGNORECASE), name)
    for words, name in [
        ("HEAD|BRAIN|SKULL|FACE|FACIAL|SINUS\\w*|ORBIT\\w*", "head"), ("NECK|THYROID", "neck"),
        ("C-?SPINE|CERVICAL|T-?SPINE|L-?SPINE|LUMBAR|SACRUM|SPINE", "spine"), ("ABDOM\\w*", "abdomen"),
        ("PELVI\\w*|HIP|HIPS", "pelvis"),
        ("KNEE|KNEES|ANKLE|FOOT|FEET|TOE\\w*|FEMUR|TIBIA|FIBULA|LEG", "lower limb"),
        ("HAND|HANDS|WRIST|FINGER\\w*|ELBOW|FOREARM|HUMERUS|SHOULDER|ARM", "upper limb"),
        ("RENAL|KIDNEY\\w*|LIVER|GALLBLADDER", "abdominal organ"), ("BREAST", "breast"),
        ("SCROT\\w*|TESTI\\w*|UTER\\w*|OVAR\\w*|OBSTETRIC\\w*|PROSTATE", "pelvic organ"), ("CARDIAC|HEART", "heart"),
    ]
]


def _canonical(name: str, table: list) -> str:
    """Our names for every entry of ``table`` the procedure name matches ("" for none)."""
    return ", ".join(dict.fromkeys(word for pattern, word in table if pattern.search(name)))


# Sections that say "radiology" without saying which exam.
_GENERIC_SECTIONS = frozenset({"RAD", "RX", "IMG", "IMAGING", "RADIOLOGY", "XR"})


@dataclass(frozen=True)
class ScopeDecision:
    in_scope: bool
    rule: Rule
    seen: str = ""  # what the rule looked at: standard-shaped codes and our own words, never the sender's text

    @property
    def detail(self) -> str:
        return f"rule {self.rule}: {self.seen}"


def _norm(code: str) -> str:
    code = code.strip()
    return code if "|" in code else f"|{code}"


def _match(code: str, listed: frozenset[str]) -> bool:
    system, _, value = code.partition("|")
    return code in listed or f"|{value}" in listed


_SYSTEM_NAMES = {"http://loinc.org": "LOINC", "http://www.ama-assn.org/go/cpt": "CPT", "http://snomed.info/sct": "SNOMED",
                 "http://radlex.org": "RadLex"}


def _seen(proc: Coding, modality: str | None) -> str:
    """The procedure code (standard-shaped only) and its system by our name, whether it had a name, and the modality
    code: a sender can put a patient's name in any of them, so none is quoted as sent."""
    parts = []
    if proc.code:
        system = _SYSTEM_NAMES.get(proc.system or "", "local" if proc.system else "no")
        parts.append(f"procedure code {safe_code(proc.code)} ({system} system)")
    if modality:
        parts.append(f"modality {safe_code(modality)}")
    return "; ".join(parts) or ("no procedure code or modality" if proc.display else "no procedure code, name or modality")


__all__ = ["Scope", "ScopeDecision"]
