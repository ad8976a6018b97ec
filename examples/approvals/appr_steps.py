"""The steps of the expense-approval workflow, as plain typed functions.

``app.py`` wires them into workflows with ``wf.step(after=..., ...)(function)``,
the way the node editor of the old platform wired nodes: the functions know
nothing about queues, retries or signals, and unit tests call them directly.

    validate -> enrich -> check_budget -> review -> book
                                          |
                                          waits for the "approval" signal; a rejection,
                                          or no decision in time, ends the run there
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from appr_models import (
    Approval,
    Booking,
    Budgeted,
    DailyReport,
    Decision,
    Enriched,
    Expense,
    ExpenseLine,
    Rejection,
)
from appr_services import BUDGETS_EUR_CENTS, book_expense, reserve_budget

import flowkit

#: Euro cents per cent of each currency (fixed rates: the example is deterministic).
EUR_RATES: dict[str, float] = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.05}
#: Expenses above this (in euros) are not expenses: they need a purchase order.
EXPENSE_LIMIT_EUR_CENTS = 5_000_000
#: From this total (in euros) on, a director approves instead of a manager.
DIRECTOR_FROM_EUR_CENTS = 100_000

#: The flows whose runs the nightly report counts.
EXPENSE_FLOWS = ("expense_approval", "expense_approval_short")


def to_eur_cents(amount_cents: int, currency: str) -> int:
    """An amount in euro cents, rounded half to even."""
    return round(amount_cents * EUR_RATES[currency])


def validate(expense: Expense) -> Expense:
    """The business rules pydantic does not check; tidy the free-text fields.

    A broken rule raises :class:`flowkit.PermanentError`: no retry can fix the
    data, so the run fails at once instead of after its retries.
    """
    department = expense.department.strip().lower()
    if department not in BUDGETS_EUR_CENTS:
        known = ", ".join(sorted(BUDGETS_EUR_CENTS))
        raise flowkit.PermanentError(f"unknown department {department!r} (known: {known})")
    total_eur = to_eur_cents(sum(li.amount_cents for li in expense.lines), expense.currency)
    if total_eur > EXPENSE_LIMIT_EUR_CENTS:
        raise flowkit.PermanentError(
            f"expense {expense.expense_id} totals {total_eur / 100:,.2f} EUR, over the "
            f"{EXPENSE_LIMIT_EUR_CENTS / 100:,.0f} EUR limit: file a purchase order instead"
        )
    lines = [
        ExpenseLine(
            description=" ".join(li.description.split()),
            category=li.category,
            amount_cents=li.amount_cents,
        )
        for li in expense.lines
    ]
    return expense.model_copy(
        update={
            "employee": expense.employee.strip().lower(),
            "department": department,
            "lines": lines,
        }
    )


def enrich(expense: Expense) -> Enriched:
    """Totals in the expense's currency and in euros, per category, and the approver level."""
    by_category: Counter[str] = Counter()
    for line in expense.lines:
        by_category[line.category] += to_eur_cents(line.amount_cents, expense.currency)
    total_eur = sum(by_category.values())
    return Enriched(
        expense_id=expense.expense_id,
        employee=expense.employee,
        department=expense.department,
        currency=expense.currency,
        lines=len(expense.lines),
        total_cents=sum(li.amount_cents for li in expense.lines),
        total_eur_cents=total_eur,
        by_category_eur_cents=dict(by_category.most_common()),
        approver_level="director" if total_eur >= DIRECTOR_FROM_EUR_CENTS else "manager",
    )


def check_budget(expense: Enriched, ctx: flowkit.Context) -> Budgeted:
    """Reserve the amount on the department's budget, through the flaky budget service.

    ``ctx.idempotency_key`` is the same for every attempt of this step, so the
    retry after a timeout gets the answer to the first request instead of
    reserving the amount twice.
    """
    reply = reserve_budget(ctx.idempotency_key, expense.department, expense.total_eur_cents)
    ctx.logger.info(
        "budget request %s (attempt %d): %.2f EUR left",
        reply.request_id,
        ctx.attempt,
        reply.left_eur_cents / 100,
    )
    return Budgeted(
        **expense.model_dump(),
        budget_request_id=reply.request_id,
        budget_left_eur_cents=reply.left_eur_cents,
        within_budget=reply.within_budget,
    )


def review(
    expense: Budgeted, approval: Approval | flowkit.TimedOut, ctx: flowkit.Context
) -> Decision | flowkit.Stop:
    """The human decision: runs once the ``approval`` signal arrives, or its window closes.

    Approved, the expense goes on to ``book``. Rejected, or undecided when the
    approval window closes (``approval`` is then a :class:`flowkit.TimedOut`,
    never to be mistaken for an approval), the run ends here, successfully,
    with a :class:`Rejection` as its result.
    """
    if isinstance(approval, flowkit.TimedOut):
        why = f"no decision within {_duration(approval.waited)}"
        ctx.logger.info("%s: auto-rejected", why)
        rejection = Rejection(expense_id=expense.expense_id, approver="", comment=why)
        return flowkit.Stop(output=rejection.model_dump(), reason=f"auto-rejected: {why}")
    if not approval.approved:
        ctx.logger.info("rejected by %s: %s", approval.approver, approval.comment or "-")
        rejection = Rejection(
            expense_id=expense.expense_id, approver=approval.approver, comment=approval.comment
        )
        reason = f"rejected by {approval.approver}" + (
            f": {approval.comment}" if approval.comment else ""
        )
        return flowkit.Stop(output=rejection.model_dump(), reason=reason)
    return Decision(
        expense_id=expense.expense_id,
        employee=expense.employee,
        department=expense.department,
        total_eur_cents=expense.total_eur_cents,
        approver=approval.approver,
        comment=approval.comment,
    )


def _duration(span: timedelta) -> str:
    """``24h``, ``30m`` or ``2s``: an approval window as the workflow declares it."""
    seconds = span.total_seconds()
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def book(decision: Decision, ctx: flowkit.Context) -> Booking:
    """Book the approved expense in the ledger, once, whatever the retries."""
    entry = book_expense(
        ctx.idempotency_key, decision.expense_id, decision.total_eur_cents, decision.approver
    )
    ctx.logger.info("booked %s as %s", decision.expense_id, entry)
    return Booking(
        expense_id=decision.expense_id,
        ledger_entry=entry,
        total_eur_cents=decision.total_eur_cents,
        approver=decision.approver,
    )


def daily_report(tick: datetime, ctx: flowkit.Context) -> DailyReport:
    """Count what happened to the expense runs created in the 24 hours before ``tick``.

    ``flowkit scheduler`` starts it at 02:00 UTC with the tick's time as input.
    """
    assert ctx.app is not None  # always set when a worker runs the step
    start = tick - timedelta(days=1)
    counts: Counter[str] = Counter()
    booked_cents = 0
    for flow in EXPENSE_FLOWS:
        for run in ctx.app.runs(flow=flow, limit=100_000):
            if not start < run.created_at <= tick:
                continue
            status = run.status.value
            if status == "succeeded":
                status = "rejected" if run.stopped else "booked"
                if status == "booked" and isinstance(run.output, dict):
                    booked_cents += int(run.output.get("total_eur_cents", 0))
            counts[status] += 1
    report = DailyReport(
        window_start=start,
        window_end=tick,
        submitted=sum(counts.values()),
        booked=counts["booked"],
        booked_eur_cents=booked_cents,
        rejected=counts["rejected"],
        waiting=counts["waiting"] + counts["pending"] + counts["running"],
        failed=counts["failed"],
        cancelled=counts["cancelled"],
        timed_out=counts["timed_out"],
    )
    ctx.logger.info("daily report: %s", report.model_dump_json())
    return report
