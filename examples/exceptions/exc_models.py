"""The values carried between the six stages of the exception pipeline.

Every model carries ``tenant_id`` and ``exception_id``, so each step's log lines
and stored input/output say which exception of which tenant they are about.
Later stages inherit from :class:`Classified`, the few facts every step after
triage needs, instead of nesting the whole history of the exception.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Severity = Literal["low", "medium", "high", "critical"]
#: Severities in increasing order, to compare and to raise one level.
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")

ErrorType = Literal[
    "timeout",
    "connection",
    "auth",
    "rate_limit",
    "validation",
    "data_quality",
    "payment",
    "heartbeat",
    "unknown",
]
Category = Literal["availability", "security", "data", "financial", "uncategorised"]
Action = Literal[
    "retry",
    "throttle_source",
    "notify_oncall",
    "open_ticket",
    "rotate_credentials",
    "quarantine_record",
    "retry_payment",
    "hold_payment",
]
Outcome = Literal["auto_remediated", "awaiting_approval", "ticketed"]


def parse_timestamp(value: str | int | float) -> datetime:
    """An aware UTC datetime from ISO-8601 (naive means UTC) or Unix seconds/milliseconds.

    Raises:
        ValueError: the value is neither.
    """
    if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
        value = float(value)
    if isinstance(value, (int, float)):
        seconds = float(value) / 1000 if abs(value) >= 100_000_000_000 else float(value)
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError) as exc:
            raise ValueError(f"timestamp {value!r} is out of range") from exc
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)  # ValueError names the bad value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


class ExceptionRef(BaseModel):
    """What identifies an exception: its tenant and its id within the tenant."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str = Field(min_length=1, max_length=64)
    exception_id: str = Field(min_length=1, max_length=128)


class RawException(ExceptionRef):
    """An exception as ingested (``POST /exceptions/{tenant_id}`` in the old platform).

    ``kind`` is whatever the reporting system called the error (``"TimeoutError"``,
    ``"ECONNREFUSED"``, ``"401"``), ``occurred_at`` an ISO-8601 string or a Unix
    timestamp in seconds or milliseconds.
    """

    source: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=200)
    message: str = Field(default="", max_length=10_000)
    occurred_at: str | int | float
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _parseable(cls, value: str | int | float) -> str | int | float:
        # Reject a bad timestamp at submit (nothing is enqueued) rather than in intake,
        # where the step would fail after its retries.
        parse_timestamp(value)
        return value


class NormalizedException(ExceptionRef):
    """Intake's output: canonical source and error type, a UTC timestamp, a fingerprint."""

    source: str
    error_type: ErrorType
    original_kind: str
    message: str
    occurred_at: datetime
    attributes: dict[str, Any]
    fingerprint: str


class Classified(ExceptionRef):
    """The facts every stage after triage works from."""

    source: str
    error_type: ErrorType
    severity: Severity
    category: Category


class TriagedException(Classified):
    """Triage's output: a severity and a category, with the reasons for them."""

    reasons: list[str]
    occurred_at: datetime
    fingerprint: str


class PolicyDecision(Classified):
    """Which remediation actions the tenant's policy allows for this exception."""

    rule_id: str
    allowed_actions: list[Action]
    requires_approval: bool
    reasons: list[str]


class PlaybookStep(BaseModel):
    """One action of a playbook, with its parameters."""

    model_config = ConfigDict(frozen=True)

    action: Action
    params: dict[str, str | int] = Field(default_factory=dict)


class PlaybookPlan(Classified):
    """The playbook chosen for the exception, cut down to the allowed actions."""

    rule_id: str
    playbook_id: str
    requires_approval: bool
    steps: list[PlaybookStep]


class ActionRecord(BaseModel):
    """What the tool stage recorded for one playbook step."""

    model_config = ConfigDict(frozen=True)

    action: Action
    status: Literal["done", "pending_approval"]
    params: dict[str, str | int]


class ToolResult(Classified):
    """The tool stage's record: one action id, stable across retries, and what it did."""

    rule_id: str
    playbook_id: str
    action_id: str
    idempotency_key: str
    actions: list[ActionRecord]


class FeedbackRecord(Classified):
    """The final summary of a processed exception: the run's result."""

    rule_id: str
    playbook_id: str
    action_id: str
    outcome: Outcome
    actions_done: int
    actions_pending: int
    summary: str
