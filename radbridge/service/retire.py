"""Retire radbridge's AI drafts for a study whose signed report arrived: the FHIR store half of the lifecycle.

Looks the drafts up by the accession, decides per draft (radbridge.formats.fhir.retire.verdict) and retires the
ones that are still radbridge's unsigned drafts with a version-aware transaction. A concurrent edit (the version
moved between read and write) is re-read and decided again, a few times; then it is left to the loop's backoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Literal

from ..errors import StoreUnavailable, VersionConflict
from ..formats.fhir.retire import accession_search, draft_key, retirement_bundle, retirement_notice, same_study, verdict
from ..pipeline import Retirement
from ..ports import FhirStore

Result = Literal["retired", "already_retired", "already_final", "not_radbridge", "not_found"]
CONFLICT_TRIES = 3


@dataclass(frozen=True)
class Retired:
    """One decision: what happened to one draft (or ``not_found`` for the study), and the notice to publish."""

    result: Result
    draft_key: str | None = None
    notice: dict | None = None  # for retired and already_retired: consumers of the topic retire it too


def retire_drafts(
    store: FhirStore, retirement: Retirement, *, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
) -> list[Retired]:
    """Find the study's AI drafts and retire radbridge's unsigned ones. Raises what the store raises."""
    accession, signed = retirement.accession, retirement.signed
    found = [r for r in store.search("DiagnosticReport", accession_search(accession)) if same_study(r, accession)]
    results: list[Retired] = []
    for resource in found:
        for _ in range(CONFLICT_TRIES):
            decision = verdict(resource)
            if decision is None:
                break  # not an AI draft (the signed report itself, another report of the study)
            key = draft_key(resource)
            if decision == "retire":
                try:
                    store.transact(retirement_bundle(resource, signed, recorded=clock()))
                except VersionConflict:
                    fresh = store.read("DiagnosticReport", resource["id"])
                    if fresh is None:
                        break
                    resource = fresh
                    continue
                results.append(Retired("retired", key, retirement_notice(resource, signed)))
            elif decision == "already_retired":
                # a redelivery: nothing to write; the notice again, in case the first one was never acked
                results.append(Retired("already_retired", key, retirement_notice(resource, signed)))
            else:
                results.append(Retired(decision, key))
            break
        else:
            raise StoreUnavailable(f"draft kept changing while being retired ({CONFLICT_TRIES} version conflicts)")
    return results or [Retired("not_found")]

