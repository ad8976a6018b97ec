"""The expense flow as deployed today: ``review`` waits for an approval."""

from __future__ import annotations

from pydantic import BaseModel

import flowkit


class Expense(BaseModel):
    id: int
    amount: int


class Approval(BaseModel):
    ok: bool


class Reviewed(BaseModel):
    id: int
    ok: bool


expenses = flowkit.Workflow("expenses")


@expenses.step
def check(e: Expense) -> Expense:
    return e


@expenses.step(after=check, wait_for="approval")
def review(e: Expense, approval: Approval) -> Reviewed:
    return Reviewed(id=e.id, ok=approval.ok)


@expenses.step(after=review)
def book(r: Reviewed) -> str:
    return f"expense {r.id}: {'booked' if r.ok else 'rejected'}"


app = flowkit.App("expenses", flows=[expenses])
