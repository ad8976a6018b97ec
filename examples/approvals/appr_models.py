"""The values carried between the steps of the expense-approval workflow.

Amounts are integer cents, in the expense's own currency until ``enrich``
converts them to euros (``*_eur_cents``): no floating point near money.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Currency = Literal["EUR", "USD", "GBP", "CHF"]
Category = Literal["travel", "lodging", "meals", "equipment", "other"]
ApproverLevel = Literal["manager", "director"]


class ExpenseLine(BaseModel):
    """One receipt of an expense report."""

    model_config = ConfigDict(frozen=True)

    description: str = Field(min_length=1, max_length=200)
    category: Category
    amount_cents: int = Field(gt=0)


class Expense(BaseModel):
    """An expense report as submitted: the payload of the ``expense:submitted`` event."""

    expense_id: str = Field(min_length=1, max_length=64)
    employee: str = Field(min_length=1, max_length=200)
    department: str = Field(min_length=1, max_length=64)
    currency: Currency = "EUR"
    lines: list[ExpenseLine] = Field(min_length=1, max_length=100)


class Enriched(BaseModel):
    """``enrich``'s output: totals in euros, per category, and who must approve."""

    expense_id: str
    employee: str
    department: str
    currency: Currency
    lines: int
    total_cents: int
    total_eur_cents: int
    by_category_eur_cents: dict[str, int]
    approver_level: ApproverLevel


class Budgeted(Enriched):
    """``check_budget``'s output: what the budget service said about the expense."""

    budget_request_id: str
    budget_left_eur_cents: int
    within_budget: bool


class Approval(BaseModel):
    """The payload of the ``approval`` signal: a person's decision."""

    approver: str = Field(min_length=1, max_length=200)
    approved: bool
    comment: str = Field(default="", max_length=2000)


class Decision(BaseModel):
    """``review``'s output when the expense was approved."""

    expense_id: str
    employee: str
    department: str
    total_eur_cents: int
    approver: str
    comment: str


class Rejection(BaseModel):
    """What a rejected run returns (the output of ``review``'s ``flowkit.Stop``).

    ``approver`` is empty when nobody decided within the approval window.
    """

    expense_id: str
    outcome: Literal["rejected"] = "rejected"
    approver: str
    comment: str


class Booking(BaseModel):
    """``book``'s output, the result of an approved run: the ledger entry."""

    expense_id: str
    outcome: Literal["booked"] = "booked"
    ledger_entry: str
    total_eur_cents: int
    approver: str


class DailyReport(BaseModel):
    """The nightly report: what happened to expense runs created in the last 24 hours."""

    window_start: datetime
    window_end: datetime
    submitted: int
    booked: int
    booked_eur_cents: int
    rejected: int
    waiting: int
    failed: int
    cancelled: int
    timed_out: int
