"""Signal waits for the payload and timeout tests, loaded by path by ``flowkit signal`` too."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import flowkit


class Expense(BaseModel):
    amount: int


class Approval(BaseModel):
    approver: str
    approved: bool


class Note(BaseModel):
    text: str


#: A decision is required; nobody deciding within 30 seconds rejects the expense.
approvals = flowkit.Workflow("wf-approvals")


@approvals.step
def submit_expense(e: Expense) -> Expense:
    return e


@approvals.step(after=submit_expense, wait_for="approval", timeout="30s")
def review(e: Expense, approval: Approval | flowkit.TimedOut) -> str:
    if isinstance(approval, flowkit.TimedOut):
        return f"auto-rejected: no decision within {approval.waited.total_seconds():g}s"
    return f"{'approved' if approval.approved else 'rejected'} by {approval.approver}"


@approvals.step(after=review)
def notify(outcome: str) -> str:
    return outcome


#: A note may come empty (``null``), and nobody writing one is a third, distinct case.
notes = flowkit.Workflow("wf-notes")


@notes.step(wait_for="note", timeout="1m")
def read_note(e: Expense, note: Note | flowkit.TimedOut | None) -> str:
    if isinstance(note, flowkit.TimedOut):
        return "timed out"
    return "empty note" if note is None else f"note: {note.text}"


#: No timeout: waits until the run's deadline.
untyped = flowkit.Workflow("wf-untyped")


@untyped.step(wait_for="anything")
def take_anything(e: Expense, anything: Any) -> str:
    return repr(anything)


#: A second wait after the first keeps the run live once the first wait timed out.
gated = flowkit.Workflow("wf-gated")


@gated.step(wait_for="approval", timeout="30s")
def gated_review(e: Expense, approval: Approval | flowkit.TimedOut) -> str:
    return "timed out" if isinstance(approval, flowkit.TimedOut) else "decided"


@gated.step(after=gated_review, wait_for="go")
def gated_go(outcome: str, go: bool) -> str:
    return outcome


app = flowkit.App("waits", flows=[approvals, notes, untyped, gated])
