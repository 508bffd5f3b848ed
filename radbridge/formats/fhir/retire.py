"""Retiring an AI draft once its study's signed report has arrived: pure FHIR shapes and the decision, no I/O.

A draft is retired only while it is still radbridge's unsigned draft: it carries radbridge's
``urn:radbridge:draft`` identifier, the AIAST label and status preliminary or partial. Retiring is one
transaction: ``PUT`` of the same resource with status ``cancelled`` (``ifMatch`` on the version that was read,
so a concurrent edit by a radiologist makes the whole transaction fail instead of being overwritten) and a
Provenance (activity UPDATE, reason "superseded by the signed report", entity the signed report), created
conditionally on its ``_tag`` so a redelivery adds nothing. Why ``cancelled``: docs/design.md, "Draft lifecycle".
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Literal

from ... import __version__
from ...domain import FINAL_STATUSES, Identifier, Report
from ...ids import DRAFT_SYSTEM, resource_uuid
from .writer import AIAST, _instant, _source_report_entities

#: Status a retired draft gets. Not ``entered-in-error``: the draft was not a mistake, it was superseded.
RETIRED_STATUS = "cancelled"
#: Tag on the retirement Provenance (code: the draft's key): its conditional-create key.
RETIRED_SYSTEM = "urn:radbridge:retired"
REASON = "superseded by the signed report"
UNSIGNED_STATUSES = frozenset({"preliminary", "partial"})
UPDATE_ACTIVITY = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE", "display": "revise"}]
}
PERFORMER_TYPE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "performer",
            "display": "Performer",
        }
    ]
}
RETIRED_BANNER = "<p><b>Retired: superseded by the signed report.</b></p>"

Verdict = Literal["retire", "already_retired", "already_final", "not_radbridge"]


def draft_key(resource: dict) -> str | None:
    """The report key in radbridge's ``urn:radbridge:draft`` identifier, if the resource carries one."""
    return next(
        (i.get("value") for i in resource.get("identifier") or [] if isinstance(i, dict) and i.get("system") == DRAFT_SYSTEM),
        None,
    )


def _labelled(resource: dict) -> bool:
    security = (resource.get("meta") or {}).get("security") or []
    return any(s.get("system") == AIAST["system"] and s.get("code") == AIAST["code"] for s in security if isinstance(s, dict))


def _retired_tag(resource: dict) -> bool:
    return any(t.get("system") == RETIRED_SYSTEM for t in (resource.get("meta") or {}).get("tag") or [] if isinstance(t, dict))


def accession_search(accession: Identifier) -> dict[str, str]:
    """Search parameters for the reports of a study: by value only, since a draft made from HL7 v2 keeps a
    non-URI assigning authority as ``assigner`` (no system); ``same_study`` then checks the rest."""
    value = accession.value.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")
    return {"identifier": value}


def same_study(resource: dict, accession: Identifier) -> bool:
    """The resource carries this accession: same value, and the same system or assigner where both name one."""
    theirs_system = accession.system if accession.system and ":" in accession.system else None
    theirs_assigner = accession.system if accession.system and ":" not in accession.system else None
    for ident in resource.get("identifier") or []:
        if not isinstance(ident, dict) or ident.get("value") != accession.value:
            continue
        system = ident.get("system")
        assigner = (ident.get("assigner") or {}).get("display")
        if system and theirs_system and system != theirs_system:
            continue
        if assigner and theirs_assigner and assigner != theirs_assigner:
            continue
        return True
    return False


def verdict(resource: dict) -> Verdict | None:
    """What to do with a report found for the study; None: not an AI draft at all (e.g. the signed report).

    ``not_radbridge``: it looks like an AI draft (AIAST or radbridge's identifier) but is not radbridge's
    unsigned draft any more (another vendor's, relabelled, or retired by someone else): hands off.
    """
    key, labelled = draft_key(resource), _labelled(resource)
    if key is None and not labelled:
        return None
    if key is None:
        return "not_radbridge"
    status = resource.get("status")
    if status in FINAL_STATUSES:
        return "already_final"  # a radiologist signed the draft itself: it is their report now
    if status == RETIRED_STATUS and _retired_tag(resource):
        return "already_retired"
    if status in UNSIGNED_STATUSES and labelled:
        return "retire"
    return "not_radbridge"


def retirement_bundle(draft: dict, signed: Report, *, recorded: datetime) -> dict:
    """The transaction that retires ``draft`` (as read, with ``meta.versionId``) for the ``signed`` report."""
    rid, version, key = draft["id"], (draft.get("meta") or {}).get("versionId"), draft_key(draft)
    if not version or not key:
        raise ValueError("a draft to retire needs its id, versionId and radbridge draft identifier")
    retired = copy.deepcopy(draft)
    meta = {k: v for k, v in (retired.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    meta["tag"] = [*(meta.get("tag") or []), {"system": RETIRED_SYSTEM, "code": key}]
    retired["meta"] = meta
    retired["status"] = RETIRED_STATUS
    text = retired.get("text") or {}
    div = text.get("div")
    if isinstance(div, str) and div.startswith("<div") and ">" in div:
        # What an EHR shows: say it was retired, above the draft's own banner.
        head, rest = div.split(">", 1)
        retired["text"] = {**text, "div": f"{head}>{RETIRED_BANNER}{rest}"}
    target = f"DiagnosticReport/{rid}"
    provenance = {
        "resourceType": "Provenance",
        "meta": {"tag": [{"system": RETIRED_SYSTEM, "code": key}]},
        "target": [{"reference": target}],
        "recorded": _instant(recorded),
        "activity": UPDATE_ACTIVITY,
        "reason": [{"text": REASON}],
        "agent": [{"type": PERFORMER_TYPE, "who": {"display": f"radbridge {__version__}"}}],
        "entity": _source_report_entities(signed),
    }
    if not provenance["entity"]:
        del provenance["entity"]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": retired, "request": {"method": "PUT", "url": target, "ifMatch": f'W/"{version}"'}},
            {
                "fullUrl": "urn:uuid:" + resource_uuid(key, "Provenance/retired"),
                "resource": provenance,
                "request": {"method": "POST", "url": "Provenance", "ifNoneExist": f"_tag={RETIRED_SYSTEM}|{key}"},
            },
        ],
    }


def retirement_notice(draft: dict, signed: Report) -> dict:
    """The output topic's retirement record: ids and statuses only (no report text, no patient identifier)."""
    accession = signed.accession
    notice: dict = {
        "type": "draft-retired",
        "draft": {"system": DRAFT_SYSTEM, "value": draft_key(draft)},
        "status": RETIRED_STATUS,
        "reason": REASON,
        "signedReportStatus": signed.status,
        "signedReport": [e["what"] for e in _source_report_entities(signed)],
    }
    if accession is not None:
        notice["accession"] = {k: v for k, v in (("system", accession.system), ("value", accession.value)) if v}
    return notice
