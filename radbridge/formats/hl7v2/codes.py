"""The vocabulary the HL7 v2 reader decides with: what is radiology, which OBX is which report section.

Decisions (and why):
- Radiology is recognised from the diagnostic service section (OBR-24, HL7 table 0074 plus the modality
  codes RIS systems put there), from the procedure (OBR-4 code or words such as CT, MRI, X-ray,
  ultrasound, mammogram), or from report-section codes in OBX-3 (LOINC or the ``&IMP``/``&GDT`` suffixes).
- Echocardiograms, ECGs and cardiac catheterisation are cardiology, not radiology, even when an imaging
  system sends them with OBR-24 ``CT`` (as the LinuxForHealth samples do): they are written by
  cardiologists in a measurement-heavy style the radiology model was not trained on, so drafting an
  impression for them would be wrong. They are skipped as not radiology, with the reason.
- Lab sections (chemistry, haematology, microbiology, genetics, ...) are never radiology, whatever else
  the message says.
"""

from __future__ import annotations

import re
from functools import lru_cache

# HL7 table 0074 sections that are imaging, plus modality codes and local spellings seen in OBR-24.
RADIOLOGY_SECTIONS = frozenset(
    {
        "RAD", "RX", "RUS", "CT", "NMR", "NMS", "OUS", "VUS", "XRC", "MR", "MRI", "US", "NM", "XR", "DX",
        "CR", "MG", "MAM", "PET", "PT/CT", "IR", "FL", "RF", "DXA", "BD", "IMG", "DI", "ANG", "XA", "CTA",
        "MRA",
    }  # fmt: skip
)
CARDIOLOGY_SECTIONS = frozenset({"CUS", "EC", "CTH", "ECG", "EKG", "ECHO", "CARD"})
LAB_SECTIONS = frozenset(
    {
        "LAB", "CH", "HM", "MB", "MCB", "MYC", "SR", "BLB", "BG", "CG", "GE", "IMM", "TX", "VR", "SP",
        "CP", "OSL", "PAT", "CHEM", "HEM", "MIC", "POC", "ICU", "NRS", "PF", "AU", "PHR",
    }  # fmt: skip
)

_RADIOLOGY_WORDS = re.compile(
    r"\b(?:X-?RAYS?|RADIOGRAPH\w*|CAT SCAN|COMPUTED TOMOGRAPHY|MAGNETIC RESONANCE|ULTRASOUND|SONO\w*|"
    r"DOPPLER|DUPLEX|MAMMO\w*|TOMOSYNTHESIS|FLUORO\w*|ANGIO\w*|SPECT|NUCLEAR MED\w*|SCINTI\w*|"
    r"BONE SCAN|DEXA|ARTHROGRAM|MYELOGRAM|VENOGRAM|ESOPHAGRAM|BARIUM|IMAGING|RADIOLOGY|"
    r"CHEST (?:PA|AP|1|2|ONE|TWO|FRONTAL|LAT)\w*)\b",
    re.IGNORECASE,
)
# Modality abbreviations only count in capitals: "us" and "pet" are also ordinary words.
_RADIOLOGY_ABBREVIATIONS = re.compile(r"\b(?:XR|CXR|KUB|CT|CTA|MRI?|MRA|US|PET|NM|DXA|IVP)\b")
_CARDIOLOGY_WORDS = re.compile(
    r"\b(?:ECHO\w*|TTE|TEE|ECG|EKG|ELECTROCARDIO\w*|HOLTER|CARDIAC CATH\w*|STRESS TEST)\b", re.IGNORECASE
)


@lru_cache(maxsize=4096)  # code names repeat across messages; the regexes are the cost
def is_radiology_procedure_text(text: str) -> bool:
    return bool(text) and (_RADIOLOGY_WORDS.search(text) or _RADIOLOGY_ABBREVIATIONS.search(text)) is not None


@lru_cache(maxsize=4096)  # code names repeat across messages; the regexes are the cost
def is_cardiology_procedure_text(text: str) -> bool:
    return bool(text) and _CARDIOLOGY_WORDS.search(text) is not None


# Report-section kinds an OBX can carry. "report" is the whole narrative (split by its headings).
FINDINGS, IMPRESSION, INDICATION, COMPARISON, TECHNIQUE = "findings", "impression", "indication", "comparison", "technique"
RECOMMENDATION, ADDENDUM, REPORT = "recommendation", "addendum", "report"
# OBX that are about the report rather than part of it (study UIDs, requests to the reader, ...):
REFERENCE = "reference"

# LOINC codes of radiology report sections (the DICOM SR / HL7 CDA imaging report section codes).
LOINC_SECTIONS: dict[str, str] = {
    "59776-5": FINDINGS,  # Procedure findings
    "18782-3": REPORT,  # Radiology Study observation (narrative)
    "18748-4": REPORT,  # Diagnostic imaging study (the whole report)
    "18726-0": REPORT,  # Radiology studies (set)
    "19005-8": IMPRESSION,  # Radiology Impression
    "59777-3": IMPRESSION,  # Radiology Impression (as used in some IHE profiles)
    "18834-2": COMPARISON,  # Radiology Comparison study
    "55114-3": COMPARISON,  # Prior imaging procedure descriptions
    "18785-6": INDICATION,  # Radiology Reason for study
    "59768-2": INDICATION,  # Procedure indications
    "55752-0": INDICATION,  # Clinical information
    "11329-0": INDICATION,  # History general
    "55115-0": INDICATION,  # Requested imaging studies information
    "55111-9": TECHNIQUE,  # Current imaging procedure descriptions
    "18783-1": RECOMMENDATION,  # Radiology Study recommendation
    "55107-7": ADDENDUM,  # Addendum
    "11487-6": REFERENCE,  # Consultation request (a message to the reader, not report text)
    "74466-4": REFERENCE,  # Feedback to user
    "113014": REFERENCE,  # DICOM "Study" (Study Instance UID)
    "121018": REFERENCE,  # DICOM Procedure Study Instance UID
}

# Traditional HL7 v2 observation-ID suffixes ("CXR&IMP", "&GDT"), chapter 7.
SUFFIX_SECTIONS: dict[str, str] = {
    "GDT": REPORT,  # general description text: the whole report
    "FND": FINDINGS,
    "IMP": IMPRESSION,
    "INT": IMPRESSION,  # interpretation
    "CON": IMPRESSION,  # conclusion
    "REC": RECOMMENDATION,
    "ADT": ADDENDUM,
    "TCM": TECHNIQUE,  # technician's comment
    "PRO": TECHNIQUE,
    "CMP": COMPARISON,
    "HIS": INDICATION,
    "RFR": INDICATION,  # reason for request
    "ANT": FINDINGS,  # anatomy
}

# Last resort when the code is unknown (or mistyped, like "859776-5^Procedure Findings"): the code's name.
_NAME_SECTIONS = [
    (re.compile(r"\bfinding", re.I), FINDINGS),
    (re.compile(r"\b(?:impression|conclusion|interpretation)", re.I), IMPRESSION),
    (re.compile(r"\b(?:indication|history|reason for|clinical info)", re.I), INDICATION),
    (re.compile(r"\bcomparison", re.I), COMPARISON),
    (re.compile(r"\btechnique", re.I), TECHNIQUE),
    (re.compile(r"\brecommendation", re.I), RECOMMENDATION),
    (re.compile(r"\baddendum", re.I), ADDENDUM),
    (re.compile(r"\b(?:report|narrative)\b", re.I), REPORT),
]


@lru_cache(maxsize=4096)  # code names repeat across messages; the regexes are the cost
def section_of(code: str, name: str) -> str | None:
    """The report section an OBX-3 (code, name) names, or None when it names none."""
    code = code.strip()
    if code in LOINC_SECTIONS:
        return LOINC_SECTIONS[code]
    if "&" in code:
        suffix = code.rsplit("&", 1)[1].strip().upper()
        if suffix in SUFFIX_SECTIONS:
            return SUFFIX_SECTIONS[suffix]
    for pattern, kind in _NAME_SECTIONS:
        if name and pattern.search(name):
            return kind
    return None


# OBR-25 / OBX-11 result status (HL7 table 0123) -> FHIR DiagnosticReport.status (HL7's v2-to-FHIR map).
RESULT_STATUS: dict[str, str] = {
    "O": "registered",
    "I": "registered",
    "S": "registered",
    "A": "partial",
    "P": "preliminary",
    "R": "partial",
    "N": "partial",
    "C": "corrected",
    "M": "amended",
    "F": "final",
    "X": "cancelled",
    "D": "entered-in-error",
    "W": "entered-in-error",
    "Y": "unknown",
    "Z": "unknown",
}
TEXT_TYPES = frozenset({"TX", "FT", "ST", "TXT"})
# ED-3 data subtypes (HL7 table 0291 and what senders write there) -> media type for radbridge.attachments.
ED_SUBTYPES = {"PDF": "application/pdf", "RTF": "text/rtf", "HTML": "text/html", "PLAIN": "text/plain",
               "TEXT": "text/plain", "TXT": "text/plain", "XHTML": "application/xhtml+xml"}  # fmt: skip
# OBX-11 values whose text must not be used: deleted, wrong, or "cannot be obtained".
EXCLUDED_OBX_STATUSES = frozenset({"D", "W", "X"})

# HL7 v2 coding-system names (table 0396) -> FHIR system URIs, for the common ones.
CODING_SYSTEMS: dict[str, str] = {
    "LN": "http://loinc.org",
    "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct",
    "SNOMED-CT": "http://snomed.info/sct",
    "C4": "http://www.ama-assn.org/go/cpt",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "CPT4": "http://www.ama-assn.org/go/cpt",
    "RADLEX": "http://radlex.org",
    "RID": "http://radlex.org",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
}


def coding_system_uri(name: str) -> str | None:
    name = name.strip()
    if not name:
        return None
    return CODING_SYSTEMS.get(name.upper(), name)


# HL7 table 0211 (MSH-18, alternate character sets) -> Python codec. Only sets with one well-defined byte
# encoding are listed; UTF-16/32 and the deprecated "UNICODE" (UCS-2) cannot be framed byte-wise the way ER7
# is, and ISO IR14/IR159 are only meaningful inside ISO 2022 switching (ISO IR87 is read as ISO-2022-JP,
# which is how Japanese HL7 senders use it).
# Every value of HL7 table 0211: the only MSH-18 values a note may name (anything else is a sender's text).
TABLE_0211 = frozenset(
    {"ASCII", *(f"8859/{n}" for n in range(1, 16)), "ISO IR14", "ISO IR87", "ISO IR159", "GB 18030-2000",
     "KS X 1001", "CNS 11643-1992", "BIG-5", "UNICODE", "UNICODE UTF-8", "UNICODE UTF-16", "UNICODE UTF-32"}
)
CHARSETS = {
    "ASCII": "ascii",
    **{f"8859/{n}": f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)},
    "UNICODE UTF-8": "utf-8",
    "ISO IR87": "iso2022_jp",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}
