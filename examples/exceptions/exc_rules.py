"""The static tables the stages read: error-type aliases, triage, policy rules, playbooks.

In the Kafka platform these lived in the database, per tenant; here they are
small Python tables so that the example is deterministic and self-contained.
Policy rules and playbooks are matched in order, first match wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exc_models import SEVERITIES, Action, Category, ErrorType, PlaybookStep, Severity

#: Canonical error type -> the names reporting systems use for it
#: (compared after lowercasing and turning runs of non-alphanumerics into ``_``).
ERROR_ALIASES: dict[ErrorType, tuple[str, ...]] = {
    "timeout": ("timeout", "timeouterror", "readtimeout", "deadline_exceeded", "etimedout", "504"),
    "connection": ("connectionerror", "econnrefused", "econnreset", "connection_reset", "503"),
    "auth": ("401", "403", "unauthorized", "forbidden", "authenticationerror", "token_expired"),
    "rate_limit": ("429", "too_many_requests", "ratelimited", "throttled"),
    "validation": ("400", "validationerror", "valueerror", "schema_mismatch"),
    "data_quality": ("null_value", "missing_field", "duplicate_row", "bad_encoding"),
    "payment": ("card_declined", "payment_failed", "insufficient_funds", "chargeback"),
    "heartbeat": ("heartbeat", "ping", "keepalive"),
}
CANONICAL_ERROR: dict[str, ErrorType] = {
    alias: error_type for error_type, aliases in ERROR_ALIASES.items() for alias in aliases
}

#: Triage: the starting severity and the category of each error type.
BASE_SEVERITY: dict[ErrorType, Severity] = {
    "timeout": "medium",
    "connection": "medium",
    "auth": "high",
    "rate_limit": "low",
    "validation": "low",
    "data_quality": "medium",
    "payment": "medium",
    "unknown": "medium",
}
CATEGORY: dict[ErrorType, Category] = {
    "timeout": "availability",
    "connection": "availability",
    "rate_limit": "availability",
    "auth": "security",
    "validation": "data",
    "data_quality": "data",
    "payment": "financial",
    "unknown": "uncategorised",
}
#: Words in a message that make any exception critical.
CRITICAL_WORDS: tuple[str, ...] = ("data loss", "corrupt", "breach")
#: Payments at or above this amount (in cents) are critical.
CRITICAL_PAYMENT_CENTS = 1_000_000


def severity_rank(severity: Severity) -> int:
    """0 for ``low`` up to 3 for ``critical``."""
    return SEVERITIES.index(severity)


@dataclass(frozen=True)
class PolicyRule:
    """A policy rule: which actions are allowed for the exceptions it matches.

    An empty ``tenants`` or ``categories`` matches any.
    """

    id: str
    allowed_actions: tuple[Action, ...]
    tenants: frozenset[str] = frozenset()
    categories: frozenset[Category] = frozenset()
    min_severity: Severity = "low"
    requires_approval: bool = False

    def matches(self, tenant_id: str, category: Category, severity: Severity) -> bool:
        """Whether this rule applies to an exception of that tenant, category and severity."""
        return (
            (not self.tenants or tenant_id in self.tenants)
            and (not self.categories or category in self.categories)
            and severity_rank(severity) >= severity_rank(self.min_severity)
        )


POLICY_RULES: list[PolicyRule] = [
    # Globex's change board forbids automatic remediation: tickets only, with approval.
    PolicyRule(
        "globex-manual-only",
        ("open_ticket",),
        tenants=frozenset({"globex"}),
        requires_approval=True,
    ),
    PolicyRule(
        "security-high",
        ("notify_oncall", "rotate_credentials", "open_ticket"),
        categories=frozenset({"security"}),
        min_severity="high",
        requires_approval=True,
    ),
    PolicyRule(
        "financial-high",
        ("hold_payment", "notify_oncall", "open_ticket"),
        categories=frozenset({"financial"}),
        min_severity="high",
        requires_approval=True,
    ),
    PolicyRule("financial", ("retry_payment", "open_ticket"), categories=frozenset({"financial"})),
    PolicyRule(
        "availability-high",
        ("notify_oncall", "throttle_source", "retry", "open_ticket"),
        categories=frozenset({"availability"}),
        min_severity="high",
    ),
    PolicyRule(
        "availability", ("retry", "throttle_source"), categories=frozenset({"availability"})
    ),
    PolicyRule("data", ("quarantine_record", "open_ticket"), categories=frozenset({"data"})),
    PolicyRule("default", ("open_ticket",)),
]


@dataclass(frozen=True)
class Playbook:
    """A remediation playbook for a category from a minimum severity on."""

    id: str
    category: Category
    min_severity: Severity
    steps: tuple[PlaybookStep, ...] = field(default_factory=tuple)


def _step(action: Action, **params: str | int) -> PlaybookStep:
    return PlaybookStep(action=action, params=params)


PLAYBOOKS: list[Playbook] = [
    Playbook(
        "pb-credential-compromise",
        "security",
        "high",
        (
            _step("notify_oncall", team="security"),
            _step("rotate_credentials"),
            _step("open_ticket", priority="P1"),
        ),
    ),
    Playbook("pb-auth-failure", "security", "low", (_step("open_ticket", priority="P3"),)),
    Playbook(
        "pb-payment-hold",
        "financial",
        "high",
        (
            _step("hold_payment"),
            _step("notify_oncall", team="payments"),
            _step("open_ticket", priority="P1"),
        ),
    ),
    Playbook(
        "pb-payment-retry",
        "financial",
        "low",
        (_step("retry_payment", max_attempts=3), _step("open_ticket", priority="P3")),
    ),
    Playbook(
        "pb-outage",
        "availability",
        "high",
        (
            _step("notify_oncall", team="sre"),
            _step("throttle_source", percent=50),
            _step("retry", max_attempts=5, backoff="exponential"),
        ),
    ),
    Playbook(
        "pb-transient-retry",
        "availability",
        "low",
        (_step("retry", max_attempts=5, backoff="exponential"),),
    ),
    Playbook(
        "pb-quarantine",
        "data",
        "low",
        (_step("quarantine_record"), _step("open_ticket", priority="P3")),
    ),
]
#: Used when no playbook matches or the policy allows none of its actions.
MANUAL_REVIEW = Playbook(
    "pb-manual-review", "uncategorised", "low", (_step("open_ticket", priority="P2"),)
)
#: Actions the tool stage performs even while the plan awaits approval.
SAFE_WITHOUT_APPROVAL: frozenset[Action] = frozenset({"notify_oncall", "open_ticket"})
