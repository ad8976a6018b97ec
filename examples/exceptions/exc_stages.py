"""The six stages, one per worker type of the Kafka platform.

Each stage is a plain, deterministic function of its input (the tables it
reads are in :mod:`exc_rules`), so it can be unit-tested by calling it, and a
retry or a redelivered message computes the same output again. Each stage has
its own queue, so each can be served, and scaled, by its own workers.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from exc_models import (
    SEVERITIES,
    ActionRecord,
    Classified,
    ErrorType,
    FeedbackRecord,
    NormalizedException,
    Outcome,
    PlaybookPlan,
    PolicyDecision,
    RawException,
    ToolResult,
    TriagedException,
    parse_timestamp,
)
from exc_rules import (
    BASE_SEVERITY,
    CANONICAL_ERROR,
    CATEGORY,
    CRITICAL_PAYMENT_CENTS,
    CRITICAL_WORDS,
    MANUAL_REVIEW,
    PLAYBOOKS,
    POLICY_RULES,
    SAFE_WITHOUT_APPROVAL,
    severity_rank,
)

import flowkit

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


def canonical_error_type(kind: str) -> ErrorType:
    """``"TimeoutError"``, ``" ETIMEDOUT "`` -> ``"timeout"``; unknown names -> ``"unknown"``."""
    return CANONICAL_ERROR.get(_NON_ALNUM.sub("_", kind.strip().lower()).strip("_"), "unknown")


def canonical_source(source: str) -> str:
    """``"  Billing API "`` -> ``"billing-api"``."""
    return _SPACES.sub("-", source.strip().lower())


def _as_int(value: Any) -> int:
    """An attribute as an integer (JSON producers send ``3``, ``"3"`` or nothing)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _classified(value: Classified) -> dict[str, Any]:
    """The :class:`Classified` fields of a later stage's value, to build the next one."""
    return value.model_dump(include=set(Classified.model_fields))


@flowkit.stage(queue="exceptions.intake", retries=3, timeout="30s")
def intake(raw: RawException) -> NormalizedException:
    """Normalise: canonical source and error type, UTC timestamp, a fingerprint for grouping."""
    source = canonical_source(raw.source)
    error_type = canonical_error_type(raw.kind)
    message = _SPACES.sub(" ", raw.message.strip())
    # Numbers (ids, durations) vary between repeats of the same problem.
    shape = _DIGITS.sub("#", message.lower())
    digest = hashlib.sha256(f"{raw.tenant_id}|{source}|{error_type}|{shape}".encode())
    return NormalizedException(
        tenant_id=raw.tenant_id,
        exception_id=raw.exception_id,
        source=source,
        error_type=error_type,
        original_kind=raw.kind.strip(),
        message=message,
        occurred_at=parse_timestamp(raw.occurred_at),
        attributes=raw.attributes,
        fingerprint=digest.hexdigest()[:16],
    )


@flowkit.stage(queue="exceptions.triage", retries=3, timeout="30s")
def triage(exc: NormalizedException) -> TriagedException | flowkit.Stop:
    """Classify into a severity and a category, or end the run early for noise and duplicates.

    Severity starts from the error type and is raised one level, up to
    ``high``, for each aggravating fact (production, repeated failures); only
    customer impact in production, a large payment or an alarming message make
    it ``critical``.
    """
    ignored = {
        "tenant_id": exc.tenant_id,
        "exception_id": exc.exception_id,
        "error_type": exc.error_type,
        "outcome": "ignored",
    }
    if exc.error_type == "heartbeat":
        return flowkit.Stop(output={**ignored, "reason": "heartbeat"}, reason="noise")
    duplicate_of = exc.attributes.get("duplicate_of")
    if duplicate_of:
        output = {**ignored, "reason": f"duplicate of {duplicate_of}"}
        return flowkit.Stop(output=output, reason="duplicate")

    severity = BASE_SEVERITY[exc.error_type]
    reasons = [f"{exc.error_type} errors start at {severity}"]
    rank = severity_rank(severity)
    production = exc.attributes.get("environment") == "production"
    impact = exc.attributes.get("customer_impact") is True
    retries = _as_int(exc.attributes.get("retry_count"))
    # Each aggravating fact raises the severity one level, up to high...
    for applies, reason in (
        (production, "production environment"),
        (retries >= 3, f"still failing after {retries} retries"),
    ):
        if applies and rank < severity_rank("high"):
            rank += 1
            reasons.append(reason)
    # ...while critical takes one of these.
    if production and impact:
        rank = 3
        reasons.append("customers affected in production")
    amount = _as_int(exc.attributes.get("amount_cents"))
    if exc.error_type == "payment" and amount >= CRITICAL_PAYMENT_CENTS:
        rank = 3
        reasons.append(f"payment of {amount / 100:,.2f} at or above the critical amount")
    words = [w for w in CRITICAL_WORDS if w in exc.message.lower()]
    if words:
        rank = 3
        reasons.append(f"message mentions {', '.join(repr(w) for w in words)}")
    return TriagedException(
        tenant_id=exc.tenant_id,
        exception_id=exc.exception_id,
        source=exc.source,
        error_type=exc.error_type,
        severity=SEVERITIES[rank],
        category=CATEGORY[exc.error_type],
        reasons=reasons,
        occurred_at=exc.occurred_at,
        fingerprint=exc.fingerprint,
    )


@flowkit.stage(queue="exceptions.policy", retries=3, timeout="30s")
def policy(exc: TriagedException) -> PolicyDecision:
    """Apply the first matching rule of the policy table (the last rule matches everything)."""
    rule = next(r for r in POLICY_RULES if r.matches(exc.tenant_id, exc.category, exc.severity))
    return PolicyDecision(
        **_classified(exc),
        rule_id=rule.id,
        allowed_actions=list(rule.allowed_actions),
        requires_approval=rule.requires_approval,
        reasons=[*exc.reasons, f"policy rule {rule.id}"],
    )


@flowkit.stage(queue="exceptions.playbook", retries=3, timeout="30s")
def playbook(decision: PolicyDecision) -> PlaybookPlan:
    """Pick the first playbook for the category and severity, keeping only allowed actions.

    Falls back to manual review when no playbook matches or none of its actions is allowed.
    """
    allowed = set(decision.allowed_actions)
    chosen, steps = MANUAL_REVIEW, list(MANUAL_REVIEW.steps)
    for pb in PLAYBOOKS:
        if pb.category != decision.category:
            continue
        if severity_rank(decision.severity) < severity_rank(pb.min_severity):
            continue
        kept = [s for s in pb.steps if s.action in allowed]
        if kept:
            chosen, steps = pb, kept
            break
    return PlaybookPlan(
        **_classified(decision),
        rule_id=decision.rule_id,
        playbook_id=chosen.id,
        requires_approval=decision.requires_approval,
        steps=steps,
    )


@flowkit.stage(queue="exceptions.tool", retries=3, timeout="30s")
def tool(plan: PlaybookPlan, ctx: flowkit.Context) -> ToolResult:
    """Record the plan's actions under one action id derived from the step's idempotency key.

    ``ctx.idempotency_key`` is the same for every retry and redelivery of this
    step, so a real tool call would send it as its ``Idempotency-Key`` (or store
    it in a unique column) and an action is never performed twice. Actions
    other than notifying and ticketing wait for approval when the policy says so.
    """
    action_id = "act_" + hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:20]
    actions = [
        ActionRecord(
            action=s.action,
            status="pending_approval"
            if plan.requires_approval and s.action not in SAFE_WITHOUT_APPROVAL
            else "done",
            params=s.params,
        )
        for s in plan.steps
    ]
    ctx.logger.info(
        "action %s: %s (playbook %s)",
        action_id,
        ", ".join(f"{a.action}={a.status}" for a in actions),
        plan.playbook_id,
    )
    return ToolResult(
        **_classified(plan),
        rule_id=plan.rule_id,
        playbook_id=plan.playbook_id,
        action_id=action_id,
        idempotency_key=ctx.idempotency_key,
        actions=actions,
    )


@flowkit.stage(queue="exceptions.feedback", retries=3, timeout="30s")
def feedback(result: ToolResult, ctx: flowkit.Context) -> FeedbackRecord:
    """Capture the outcome: what was done, what awaits approval, in one summary line."""
    done = [a.action for a in result.actions if a.status == "done"]
    pending = [a.action for a in result.actions if a.status == "pending_approval"]
    outcome: Outcome
    if pending:
        outcome = "awaiting_approval"
    elif set(done) <= {"open_ticket"}:
        outcome = "ticketed"
    else:
        outcome = "auto_remediated"
    summary = (
        f"{result.severity} {result.category} {result.error_type} from {result.source}: "
        f"{result.playbook_id} ({len(done)} done, {len(pending)} awaiting approval)"
    )
    ctx.logger.info("%s: %s", outcome, summary)
    return FeedbackRecord(
        **_classified(result),
        rule_id=result.rule_id,
        playbook_id=result.playbook_id,
        action_id=result.action_id,
        outcome=outcome,
        actions_done=len(done),
        actions_pending=len(pending),
        summary=summary,
    )
