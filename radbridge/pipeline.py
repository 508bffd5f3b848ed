"""The pipeline core: messages in, drafts and output Bundles out.

It does not know whether it was called from a file, Kafka or a replay: callers wrap what they received in an
``Envelope`` and act on the ``Outcome``s (print, produce, dead-letter, commit).
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Callable, Literal, Sequence

from .domain import CLOSED_STATUSES, Draft, GenerationParams, Identifier, Report, SkipReason, Skipped, sha256_of
from .errors import GenerationFailed, MalformedMessage, PermanentError, RadbridgeError, RetryableError
from .ports import ExampleSource, Generator
from .prompt import DEFAULT_TEMPLATE, Prompt, PromptTemplate, build, clean_completion, settle
from .formats.fhir.writer import build_bundle
from .formats.hl7v2.writer import build_oru
from .reading import read_message, split_payload
from .limits import DEFAULT_LIMITS, Limits, on_time, reading_budget
from .scope import Scope
from .verify import check, check_input

log = logging.getLogger(__name__)


class Mode(str, Enum):
    LIVE = "live"  # draft only reports still lacking a signed impression
    REPLAY = "replay"  # audits: draft every report, signed ones included (the source is never modified)


@dataclass(frozen=True)
class Envelope:
    """What a caller received: the raw bytes and where they came from (safe-to-log location only)."""

    data: bytes
    location: str | None = None
    received_at: datetime | None = None  # Kafka record time / file time: stable across redeliveries


@dataclass(frozen=True)
class Retirement:
    """A signed report arrived (live mode): radbridge's unsigned drafts for its accession are to be retired.

    The core only says so; the caller that holds the FHIR store finds and retires the drafts
    (radbridge.service.retire), since that is I/O.
    """

    signed: Report

    @property
    def accession(self) -> Identifier:
        return self.signed.accession  # type: ignore[return-value]  (only made for reports that have one)


@dataclass(frozen=True)
class Outcome:
    envelope: Envelope
    drafts: tuple[Draft, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    bundles: tuple[dict, ...] = ()  # one transaction Bundle per draft, in the order of ``drafts``
    oru: tuple[bytes, ...] = ()  # with --oru: one ORU^R01 per draft, in the order of ``drafts``
    error: PermanentError | None = None
    message_ids: tuple[str, ...] = ()
    format: str | None = None
    retire: tuple[Retirement, ...] = ()  # signed reports whose study's AI drafts are now superseded

    @property
    def status(self) -> Literal["drafted", "skipped", "rejected"]:
        if self.error is not None:
            return "rejected"
        return "drafted" if self.drafts else "skipped"

    @property
    def message_key(self) -> str:
        """The source message's key (its bytes' hash, cut): what logs name it by. Output records are keyed per
        report (``Draft.key``), so a redelivery yields the same keys."""
        return sha256_of(self.envelope.data)[:32]

    @property
    def message_id(self) -> str | None:
        return ",".join(self.message_ids) or None


def _fault(exc: BaseException) -> dict:
    """What to log about an unexpected exception: its type and the line that raised it, never its message or a
    traceback (either may quote the report)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else None
    return {"error": type(exc).__name__, "raised_at": where}


@dataclass
class _Pending:
    envelope: Envelope
    reports: list[Report] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    format: str | None = None
    error: PermanentError | None = None
    drafts: list[Draft] = field(default_factory=list)
    scope_rules: dict[str, str] = field(default_factory=dict)  # report key -> the scope rule that let it draft
    retire: list[Retirement] = field(default_factory=list)


class Drafter:
    """Reads messages, decides what to draft, asks the generator in one batch, builds the output."""

    def __init__(
        self,
        generator: Generator,
        *,
        mode: Mode = Mode.LIVE,
        template: PromptTemplate = DEFAULT_TEMPLATE,
        params: GenerationParams = GenerationParams(),
        output_status: Literal["preliminary", "partial"] = "preliminary",
        examples: ExampleSource | None = None,
        emit_oru: bool = False,
        scope: Scope = Scope(),
        verify: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ):
        if template.n_examples and examples is None:
            raise ValueError(f"prompt template {template.id} needs an example source")
        self.generator = generator
        self.mode = mode
        self.template = template
        # the template's decoding policy (+end<pct>) travels with every request, so each draft records it
        if template.end_threshold_pct and params.end_threshold is None:
            params = replace(params, end_threshold=template.end_threshold_pct / 100)
        self.params = params
        self.output_status = output_status
        self.examples = examples
        self.emit_oru = emit_oru
        self.scope = scope
        self.verify = verify
        self.limits = limits
        self.clock = clock

    # -- reading and policy ------------------------------------------------------------------------------
    def _read(self, envelope: Envelope) -> _Pending:
        pending = _Pending(envelope)
        try:
            with reading_budget(self.limits.message_budget_s):
                self._read_into(pending, envelope)
                # The readers check the budget as they go (limits.on_time); a read that ended over it between two
                # checks is caught here: a message that took too long is dead-lettered rather than drafted late.
                on_time()
        except PermanentError as exc:  # TooSlow included
            pending.error = exc
        except Exception as exc:  # a reader bug must dead-letter one message, not stop the service
            log.error("reader failed", extra={"location": envelope.location, **_fault(exc)})
            pending.error = MalformedMessage(f"unreadable message ({type(exc).__name__})")
        if pending.error is not None:
            pending.reports.clear()
        return pending

    def _read_into(self, pending: _Pending, envelope: Envelope) -> None:
        payload = split_payload(envelope.data, self.limits)
        pending.format = payload.format
        for i, message in enumerate(payload.messages):
            location = envelope.location if i == 0 else f"{envelope.location or ''}#{i}"
            for item in read_message(message, payload.format, location=location, received_at=envelope.received_at,
                                     limits=self.limits):
                on_time()
                if item.source.message_id and item.source.message_id not in pending.message_ids:
                    pending.message_ids.append(item.source.message_id)
                if isinstance(item, Skipped):
                    pending.skipped.append(item)
                elif (skip := self._policy_skip(item, pending)) is not None:
                    pending.skipped.append(skip)
                else:
                    pending.reports.append(item)

    def _policy_skip(self, report: Report, pending: _Pending) -> Skipped | None:
        if report.status in CLOSED_STATUSES:
            return Skipped(report.source, SkipReason.CLOSED, f"status {report.status}")
        if self.mode is Mode.LIVE and report.is_signed:
            if report.accession is not None:  # the study's AI draft, if radbridge made one, is superseded
                pending.retire.append(Retirement(report))
            return Skipped(report.source, SkipReason.ALREADY_SIGNED, f"status {report.status}")
        if self.scope.declared:
            decision = self.scope.decide(report)
            if not decision.in_scope:
                # not malformed: an exam this model was not trained for (never the dead-letter topic)
                return Skipped(report.source, SkipReason.OUT_OF_SCOPE, decision.detail)
            pending.scope_rules[report.source.key] = decision.rule
        return None

    def prompt_for(self, report: Report) -> Prompt:
        findings = report.findings or ""
        shown, pool = self.template.n_examples, self.template.select_from
        # One search: the examples shown are the most similar of the +select candidates (most similar last).
        found = tuple(self.examples.examples_for(findings, max(shown, pool))) if shown or pool else ()
        return build(
            self.template, findings, indication=report.indication, comparison=report.comparison,
            examples=found[len(found) - shown:] if shown else (), candidates=found,
        )

    # -- drafting ----------------------------------------------------------------------------------------
    def draft_reports(self, reports: Sequence[Report]) -> list[Draft]:
        """One draft per report, in order, generated in one batch: prompt, generate, clean, settle.

        The one drafting path (messages and ``radbridge eval`` alike). An empty completion gives a draft with
        an empty impression; the caller decides what that means.
        """
        if not reports:
            return []
        prompts = [self.prompt_for(r) for r in reports]
        generations = self.generator.generate(prompts, self.params)
        if len(generations) != len(prompts):
            raise RadbridgeError(f"generator returned {len(generations)} results for {len(prompts)} prompts")
        drafts = []
        for report, prompt, gen in zip(reports, prompts, generations):
            completion = clean_completion(gen.text)
            text, source = settle(self.template, prompt, completion, report.findings or "")
            flags = (check(text, report.findings).flags + check_input(report.findings, report.unmapped)
                     if self.verify and text else ())
            drafts.append(
                Draft(
                    report=report,
                    impression=text,
                    prompt_version=prompt.template_id,
                    model=self.generator.info,
                    params=self.params,
                    finish_reason=gen.finish_reason,
                    extra={} if source is None else {"wording": "selected-example" if self.template.select_from else "nearest-example",
                                                     "example_similarity": source.similarity, "example_ref": source.ref},
                    model_text=None if source is None else completion,
                    flags=flags,
                )
            )
        return drafts

    def _generate(self, pending: list[_Pending]) -> None:
        drafts = iter(self.draft_reports([r for p in pending for r in p.reports]))
        for p in pending:
            p.drafts = []
            for _ in p.reports:
                d = next(drafts)
                if not d.impression:
                    p.error = PermanentError("the model produced an empty impression")
                    continue
                rule = p.scope_rules.get(d.report.source.key)
                p.drafts.append(replace(d, extra={**d.extra, "scope_rule": rule}) if rule else d)

    def process(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        """Draft a batch. Retryable errors (model or store down) propagate for the whole batch.

        When the batch fails otherwise, each message is generated on its own: the one the model server
        rejected, or the one that trips a bug in the generator, is rejected alone and the rest still draft.
        If every message of a batch of two or more fails on its own with an unknown error, the fault is the
        service's, not the input's: that error propagates (the service stops rather than dead-letter all
        traffic).
        """
        pending = [self._read(e) for e in envelopes]
        try:
            self._generate(pending)
        except RetryableError:
            raise
        except Exception as exc:
            live = [p for p in pending if p.reports and p.error is None]
            if not isinstance(exc, PermanentError):
                log.error("generator failed on a batch, retrying its messages one by one",
                          extra={"messages": len(live), **_fault(exc)})
            unknown: list[Exception] = []
            for p in live:
                try:
                    self._generate([p])
                except PermanentError as one:
                    p.error = one
                except RetryableError:
                    raise
                except Exception as one:  # never the message text: exception messages may quote it
                    log.error("generator failed on one message", extra={"location": p.envelope.location, **_fault(one)})
                    p.error = GenerationFailed(f"the generator failed on this message ({type(one).__name__})")
                    unknown.append(one)
            if len(live) > 1 and len(unknown) == len(live):
                raise unknown[0]
        return [self._finish(p) for p in pending]

    def _finish(self, p: _Pending) -> Outcome:
        if p.error is not None:
            return Outcome(p.envelope, error=p.error, message_ids=tuple(p.message_ids), format=p.format)
        drafts = tuple(p.drafts)
        # When the draft was made (issued, Provenance.recorded), not the source's time. Ids, record keys and
        # conditional-create identifiers come from the source bytes alone, so a redelivery is still the same
        # draft; its bytes differ from the first delivery's in these times only.
        recorded = self.clock()
        bundles = tuple(build_bundle(d, status=self.output_status, recorded=recorded) for d in drafts)
        oru = tuple(build_oru(d, recorded=recorded) for d in drafts) if self.emit_oru else ()
        return Outcome(
            p.envelope,
            drafts=drafts,
            skipped=tuple(p.skipped),
            bundles=bundles,
            oru=oru,
            message_ids=tuple(p.message_ids),
            format=p.format,
            retire=tuple(p.retire),
        )
