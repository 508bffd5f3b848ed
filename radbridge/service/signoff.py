"""Sign-off feedback: how the radiologist changed radbridge's draft, measured when the signed report arrives.

The FHIR server is the draft memory (docs/design.md, "Sign-off feedback"): for each AI draft of the study that the
retirement found, the draft text (``conclusion``), when it was drafted (``issued``), its checker flags (its
DetectedIssues) and the model, adapter and prompt template (its Provenance) are read back and compared with the
signed impression (radbridge.feedback). The result is one JSON record per signed report (ids, scores and classes
only) for the feedback topic, and the ``radbridge_signoff_*`` metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from ..domain import Report
from ..errors import PermanentError
from ..feedback import Comparison, SignoffOutcome, compare
from ..formats.fhir.retire import draft_key
from ..ids import CHECK_SYSTEM, DRAFT_SYSTEM
from ..labeler import OBSERVATIONS
from ..pipeline import Retirement
from ..ports import FhirStore
from ..verify import Flag, FlagKind
from .records import OutRecord, feedback_out_record
from .retire import Retired

log = logging.getLogger(__name__)

#: Verdicts for which a draft existed and the radiologist signed something: the comparison is meaningful.
#: ``already_final``: the radiologist signed the draft itself, the most direct feedback there is.
COMPARED = {"retired": "retired", "already_retired": "retired", "already_final": "signed_as_draft"}
#: Flag kinds the signed text can confirm or refute (input-quality flags cannot be judged from it).
JUDGED_KINDS = (FlagKind.LATERALITY, FlagKind.CONTRADICTION, FlagKind.OMISSION, FlagKind.UNSUPPORTED)
NO_IMPRESSION = "no_impression"
NO_STORE = "no_store"
ERROR = "error"  # the FHIR server refused the reads: no comparison
_SLUGS = {o.lower().replace(" ", "-"): o for o in OBSERVATIONS}  # the DetectedIssue identifier's slug -> name
_SEEN_MAX = 10_000


@dataclass(frozen=True)
class DraftFacts:
    """What the FHIR server remembers of one draft (no patient data; the text stays in memory only)."""

    key: str
    text: str
    drafted_at: datetime | None
    flags: tuple[Flag, ...] = ()
    model: str | None = None
    adapter: str | None = None
    template: str | None = None


def _parse_instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def flags_of(store: FhirStore, key: str) -> tuple[Flag, ...]:
    """The draft's judged flags, read from its DetectedIssues.

    Their identifier is ``<key>/<kind>/<observation-slug>`` and the only search every server supports on a
    DetectedIssue is its exact ``_tag``, so the candidates are enumerated (one search per kind, comma = OR).
    """
    flags: list[Flag] = []
    for kind in JUDGED_KINDS:
        wanted = ",".join(f"{CHECK_SYSTEM}|{key}/{kind.value}/{slug}" for slug in sorted(_SLUGS))
        for issue in store.search("DetectedIssue", {"_tag": wanted}):
            for ident in issue.get("identifier") or []:
                value = ident.get("value") if isinstance(ident, dict) else None
                if not isinstance(value, str) or not value.startswith(f"{key}/{kind.value}/"):
                    continue
                observation = _SLUGS.get(value.rsplit("/", 1)[-1])
                if observation is not None:
                    flags.append(Flag(kind, observation))
    return tuple(sorted(set(flags), key=lambda f: (f.kind.value, f.observation)))


def _provenance_facts(store: FhirStore, key: str) -> tuple[str | None, str | None, str | None]:
    """Model, adapter and prompt template from the draft's creating Provenance (tagged with its key)."""
    for prov in store.search("Provenance", {"_tag": f"{DRAFT_SYSTEM}|{key}"}):
        who = next((a.get("who", {}).get("display") for a in prov.get("agent") or [] if isinstance(a, dict)), None)
        model, _, adapter = (who or "").partition(" + ")
        policy = next((p for p in prov.get("policy") or [] if isinstance(p, str)), "")
        template = policy.rsplit(":", 1)[-1] if policy else None
        return model or None, adapter or None, template
    return None, None, None


def draft_facts(store: FhirStore, resource: dict) -> DraftFacts | None:
    key, text = draft_key(resource), resource.get("conclusion")
    if key is None or not isinstance(text, str):
        return None
    model, adapter, template = _provenance_facts(store, key)
    return DraftFacts(key, text, _parse_instant(resource.get("issued")), flags_of(store, key), model, adapter, template)


def reader_pseudonym(reader: str | None, secret: bytes | None) -> str | None:
    """A keyed hash of the signing radiologist's id: stable per site, not reversible without the key."""
    if not reader or not secret:
        return None
    return hmac.new(secret, reader.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def feedback_record(
    signed: Report,
    compared: list[tuple[str, DraftFacts, Comparison]],
    *,
    signed_at: datetime | None,
    outcome: str,
    reader: str | None = None,
) -> dict:
    """The feedback topic's record: ids, classes and scores only (no report text, no patient identifier)."""
    accession = signed.accession
    record: dict = {
        "type": "signoff-feedback",
        "outcome": outcome,
        "signedReport": signed.source.key,  # the report version: a redelivery gives the same record
        "signedReportStatus": signed.status,
        "signedAt": signed_at.isoformat() if signed_at else None,
        "procedure": signed.procedure.code if signed.procedure else None,
        "drafts": [
            {
                "draft": {"system": DRAFT_SYSTEM, "value": facts.key},
                "verdict": verdict,
                "draftedAt": facts.drafted_at.isoformat() if facts.drafted_at else None,
                "model": facts.model,
                "adapter": facts.adapter,
                "template": facts.template,
                **comparison.as_dict(),
            }
            for verdict, facts, comparison in compared
        ],
    }
    if accession is not None:
        record["accession"] = {k: v for k, v in (("system", accession.system), ("value", accession.value)) if v}
    if reader:
        record["reader"] = reader
    return record


def record_key(signed: Report) -> str:
    """Accession and report version: one record per signed report however often it is delivered."""
    accession = signed.accession
    return f"{accession.value if accession else ''}|{signed.source.key}"


class SignoffFeedback:
    """Compares, counts and builds the feedback record; the loop sends it. One per service instance."""

    def __init__(self, topic: str | None = None, *, reader_secret: bytes | None = None):
        self.topic = topic
        self.reader_secret = reader_secret  # set: per-reader figures, with pseudonymous ids
        self._counted: OrderedDict[str, None] = OrderedDict()  # record keys counted by this instance

    @classmethod
    def from_settings(cls, settings) -> "SignoffFeedback":
        secret = None
        if settings.feedback_per_reader and settings.feedback_reader_key is not None:
            secret = settings.feedback_reader_key.get_secret_value().encode("utf-8")
        return cls(settings.feedback_topic, reader_secret=secret)

    def assess(
        self, store: FhirStore, retirement: Retirement, results: Iterable[Retired], *, signed_at: datetime | None
    ) -> tuple[str, dict]:
        """The record key and the feedback record for one signed report, from what the retirement found."""
        signed = retirement.signed
        found = {r.draft_key: COMPARED[r.result] for r in results if r.result in COMPARED and r.draft_key}
        compared: list[tuple[str, DraftFacts, Comparison]] = []
        if found:
            for resource in store.search("DiagnosticReport", {"identifier": ",".join(f"{DRAFT_SYSTEM}|{k}" for k in sorted(found))}):
                facts = draft_facts(store, resource)
                if facts is None or facts.key not in found or not (signed.impression or "").strip():
                    continue
                comparison = compare(facts.text, signed.impression or "", facts.flags,
                                     drafted_at=facts.drafted_at, signed_at=signed_at)
                compared.append((found[facts.key], facts, comparison))
        compared.sort(key=lambda c: (c[1].drafted_at.isoformat() if c[1].drafted_at else "", c[1].key))
        if not found:
            outcome = SignoffOutcome.NO_DRAFT.value
        elif not (signed.impression or "").strip():
            outcome = NO_IMPRESSION
        elif compared:
            outcome = compared[-1][2].outcome.value  # the latest draft is the one the radiologist saw last
        else:
            outcome = SignoffOutcome.NO_DRAFT.value  # the drafts vanished between the retirement and the read
        reader = reader_pseudonym(signed.interpreter, self.reader_secret)
        return record_key(signed), feedback_record(signed, compared, signed_at=signed_at, outcome=outcome, reader=reader)

    def count(self, metrics, key: str, record: dict) -> bool:
        """Count one record in the metrics, once per record key in this instance (a redelivery is not counted
        again). Returns whether it was counted."""
        if key in self._counted:
            return False
        self._counted[key] = None
        if len(self._counted) > _SEEN_MAX:
            self._counted.popitem(last=False)
        metrics.signoffs.labels(record["outcome"]).inc()
        drafts = record["drafts"]
        if not drafts:
            return True
        latest = drafts[-1]
        metrics.signoff_edit_ratio.observe(latest["edit_ratio"])
        if latest["seconds_to_sign"] is not None and latest["seconds_to_sign"] >= 0:
            metrics.signoff_seconds.observe(latest["seconds_to_sign"])
        for observation in latest["added"]:
            metrics.signoff_observations.labels("added", observation).inc()
        for observation in latest["removed"]:
            metrics.signoff_observations.labels("removed", observation).inc()
        for observation in latest["laterality_changed"]:
            metrics.signoff_observations.labels("laterality_changed", observation).inc()
        for fate in latest["flags"]:
            if fate["acted_on"] is not None:
                metrics.signoff_flags.labels(fate["kind"], str(fate["acted_on"]).lower()).inc()
        if record.get("reader"):
            metrics.signoff_by_reader.labels(record["reader"], record["outcome"]).inc()
        return True

    def on_signed(
        self, store: FhirStore, retirement: Retirement, results: list[Retired], record, signed_at, metrics
    ) -> list[OutRecord]:
        """Compare and count one signed report; the feedback record to send (none without a topic).

        A store that refuses the reads (permanent) costs the feedback, counted, never the signed report itself;
        a retryable error propagates to the loop's backoff like the retirement's.
        """
        # The report's own time (MSH-7, issued) first: a sign-off sent twice is the same record; the record time else.
        signed_at = _aware(retirement.signed.source.message_time) or signed_at
        try:
            key, feedback = self.assess(store, retirement, results, signed_at=signed_at)
        except PermanentError as exc:
            metrics.signoffs.labels(ERROR).inc()
            log.warning("sign-off feedback failed", extra={**_where(record), "error_type": getattr(exc, "kind", type(exc).__name__)})
            return []
        if self.count(metrics, key, feedback):
            log.info("sign-off feedback", extra={**_where(record), "outcome": feedback["outcome"],
                                                 "drafts": len(feedback["drafts"])})
        if self.topic is None:
            return []
        return [feedback_out_record(self.topic, record, key, feedback_bytes(feedback))]

    def unavailable(self, metrics, count: int = 1) -> None:
        """Signed reports that could not be compared because no FHIR server (the draft memory) is configured."""
        metrics.signoffs.labels(NO_STORE).inc(count)


def _aware(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=timezone.utc) if t is not None and t.tzinfo is None else t


def _where(record) -> dict:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def feedback_bytes(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
