"""Quickstart: submit a few expenses, approve some, reject others, and summarise.

::

    python examples/approvals/run.py            # --timeout S (60), --batch NAME, -v

With no configuration everything runs in this process: the memory broker with
worker threads, and the SQLite file ``flowkit.db`` in the current directory
(plus ``flowkit-approvals-services.db`` in the temporary folder: the simulated budget
service and ledger).
With ``FLOWKIT_BROKER_URL=amqp://...`` and ``FLOWKIT_DATABASE_URL=postgresql://...``
it only emits, signals and waits, and ``flowkit worker`` processes do the work.

What it does, as an approver clicking through the old platform's UI would:

1. emits ``expense:submitted`` for five expenses and a sixth that does not
   validate (refused at once, nothing enqueued);
2. waits until each run is ``waiting`` for its approval (one fails first:
   its total is over the expense limit, a ``PermanentError``);
3. approves two, rejects one, withdraws (cancels) one, and shows that a second
   approval for the same run is refused;
4. submits a seventh expense to ``expense_approval_short``, whose approval
   window is 2 seconds, lets the window pass (``review`` gets a
   ``flowkit.TimedOut`` and auto-rejects it), re-opens the decision with
   ``retry(from_step="review")`` and approves it: the earlier steps are not run again;
5. runs the nightly report once, and prints a summary.

Exits 0 when every run ended as planned, 1 otherwise, 2 on an error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from app import app, expense_approval_short, nightly
from appr_models import Booking, DailyReport
from appr_services import budget_calls, ledger_entries
from appr_steps import to_eur_cents

import flowkit
from flowkit.testing import wait_for_status

EVENT = "expense:submitted"


@dataclass
class Case:
    """One expense, what the approver will do with it, and what should come of it."""

    expense: dict[str, Any]
    action: str  # "approve", "reject", "withdraw", "none" (not expected to wait)
    expected: str  # "booked", "rejected", "cancelled", "failed", "refused"
    approver: str = ""
    comment: str = ""
    run: flowkit.Run | None = None
    outcome: str = "-"
    detail: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def expense_id(self) -> str:
        return str(self.expense["expense_id"])


def _expense(
    eid: str, who: str, dept: str, cur: str, *lines: tuple[str, str, int]
) -> dict[str, Any]:
    return {
        "expense_id": eid,
        "employee": who,
        "department": dept,
        "currency": cur,
        "lines": [{"description": d, "category": c, "amount_cents": a} for d, c, a in lines],
    }


def cases() -> list[Case]:
    """The sample expenses and the decisions taken on them."""
    return [
        Case(
            _expense(
                "exp-1001",
                " Ana.Lopez@example.com",
                "Sales",
                "EUR",
                ("Train Paris - Lyon", "travel", 8_450),
                ("Hotel,  2 nights", "lodging", 23_600),
                ("Client dinner", "meals", 4_120),
            ),
            "approve",
            "booked",
            approver="maria",
            comment="ok",
        ),
        Case(
            _expense(
                "exp-1002",
                "dmitri@example.com",
                "engineering",
                "USD",
                ("Laptop for the new hire", "equipment", 164_900),
                ("Docking station", "equipment", 18_999),
            ),
            "approve",
            "booked",
            approver="dirk",
            comment="budgeted in Q3 hiring plan",
        ),
        Case(
            _expense(
                "exp-1003",
                "chen@example.com",
                "marketing",
                "GBP",
                ("Team dinner", "meals", 61_200),
                ("Taxi", "travel", 3_850),
            ),
            "reject",
            "rejected",
            approver="maria",
            comment="team dinners need pre-approval",
        ),
        Case(
            _expense(
                "exp-1004",
                "fay@example.com",
                "support",
                "EUR",
                ("Conference ticket", "other", 45_000),
                ("Flights", "travel", 31_240),
            ),
            "withdraw",
            "cancelled",
        ),
        Case(
            _expense(
                "exp-1005",
                "eli@example.com",
                "engineering",
                "EUR",
                ("GPU server", "equipment", 6_200_000),
            ),
            "none",
            "failed",
        ),
        Case(
            _expense("exp-1006", "gus@example.com", "finance", "CHF", ("Refund", "other", -1_250)),
            "none",
            "refused",
        ),
    ]


def short_case() -> Case:
    """The expense sent to the 2-second approval window: nobody answers in time."""
    return Case(
        _expense("exp-1007", "hana@example.com", "sales", "EUR", ("Client lunch", "meals", 9_640)),
        "approve",
        "booked",
        approver="maria",
        comment="approved after the reminder",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: how long to wait, which batch, how chatty."""
    parser = argparse.ArgumentParser(
        description="Run sample expenses through the flowkit approval workflow: approve some, "
        "reject others, let one approval window pass and re-open it, then print a summary."
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for each stage (60)"
    )
    parser.add_argument(
        "--batch",
        metavar="NAME",
        help="prefix of the run keys; reusing a name finds that batch's runs "
        "(default: a new time-based name per invocation)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser.parse_args(argv)


def _settled(run: flowkit.Run, timeout: float) -> flowkit.RunStatus:
    """Wait until the run waits for its approval or has ended."""
    return wait_for_status(
        run, "waiting", "succeeded", "failed", "cancelled", "timed_out", timeout=timeout
    )


def classify(case: Case, timeout: float) -> None:
    """Wait for the case's run to end and record how it did."""
    if case.run is None:
        return
    status = case.run.wait(timeout=timeout)
    info = case.run.info()
    if status is flowkit.RunStatus.SUCCEEDED and info.stopped:
        case.outcome, case.detail = "rejected", info.stop_reason or ""
    elif status is flowkit.RunStatus.SUCCEEDED:
        booking = case.run.result(timeout=timeout)
        assert isinstance(booking, Booking)
        case.outcome = "booked"
        case.detail = f"approved by {booking.approver}, ledger entry {booking.ledger_entry}"
    elif status is flowkit.RunStatus.FAILED:
        err = info.error or {}
        failed = [s for s in case.run.steps() if s.status is flowkit.StepStatus.FAILED]
        attempts = f" after {failed[0].attempts} attempt(s)" if failed else ""
        case.outcome = "failed"
        case.detail = f"{err.get('type')} in {err.get('step')}{attempts}"
        case.notes.append(str(err.get("message")))
    else:
        case.outcome = status.value
        case.detail = "withdrawn while waiting for approval" if case.action == "withdraw" else ""


def short_window(case: Case, batch: str, timeout: float) -> None:
    """Let the approval window pass (auto-rejected), re-open the decision, then approve it."""
    run = expense_approval_short.submit(case.expense, key=f"{batch}:{case.expense_id}")
    case.run = run
    if not run.created:  # --batch reused: report the existing run as it is
        return
    status = run.wait(timeout=timeout)  # nobody decides within 2 seconds
    info = run.info()
    case.notes.append(f"first wait: {info.stop_reason or status.value}")
    if not (status is flowkit.RunStatus.SUCCEEDED and info.stopped):
        return
    before = {s.name: s.attempts for s in run.steps()}
    # flowkit retry RUN_ID --from review: decide again, reusing the steps before it
    requeued = run.retry(from_step="review")
    _settled(run, timeout)
    run.signal("approval", {"approver": case.approver, "approved": True, "comment": case.comment})
    run.wait(timeout=timeout)
    after = {s.name: s.attempts for s in run.steps()}
    kept = [n for n in ("validate", "enrich", "check_budget") if after.get(n) == before.get(n)]
    case.notes.append(
        f"retried from {', '.join(requeued)}; not run again: {', '.join(kept) or 'none'}"
    )


def act(case: Case, timeout: float, refusals: list[str]) -> None:
    """Do what the approver does once the run waits."""
    run = case.run
    if run is None or _settled(run, timeout) is not flowkit.RunStatus.WAITING:
        return
    if case.action == "withdraw":
        run.cancel()  # flowkit cancel RUN_ID
        return
    if case.action not in ("approve", "reject"):
        return
    decision = {
        "approver": case.approver,
        "approved": case.action == "approve",
        "comment": case.comment,
    }
    run.signal("approval", decision)  # flowkit signal RUN_ID approval --data '{...}'
    if not refusals:  # a second decision for the same run is refused: one signal per name
        try:
            run.signal("approval", {**decision, "approver": "someone-else"})
        except flowkit.SignalRejected as exc:
            refusals.append(str(exc))


def _eur(cents: int) -> str:
    return f"{cents / 100:,.2f} EUR"


def print_summary(
    all_cases: list[Case],
    batch: str,
    refusals: list[str],
    report: DailyReport | None,
    elapsed: float,
) -> bool:
    """The summary; whether everything went as planned."""
    ok = True
    print(f"expense approvals, batch {batch}: {app.describe()}")
    for c in all_cases:
        total = sum(li["amount_cents"] for li in c.expense["lines"])
        eur = _eur(to_eur_cents(total, c.expense["currency"])) if c.outcome != "refused" else "-"
        mark = "" if c.outcome == c.expected else f"   <-- expected {c.expected}"
        ok = ok and not mark
        print(f"  {c.expense_id}  {eur:>13}  {c.outcome:<9}  {c.detail}{mark}")
        for note in c.notes:
            print(f"  {'':8}  {'':>13}  {'':<9}  {note}")
    for text in refusals:
        print(f"  second approval refused: {text}")
    fresh = any(c.run is not None and c.run.created for c in all_cases)
    ok = ok and (bool(refusals) or not fresh)  # a reused --batch has nothing left to refuse
    run_ids = [c.run.id for c in all_cases if c.run is not None]
    requests, calls = budget_calls([f"{r}:check_budget" for r in run_ids])
    print(
        f"  budget service   {requests} requests, {calls} calls: each first call timed out, "
        "its retry (same idempotency key) got the recorded answer"
    )
    ok = ok and calls == 2 * requests
    booked = [c for c in all_cases if c.outcome == "booked"]
    entries = ledger_entries([f"{c.run.id}:book" for c in booked if c.run is not None])
    print(f"  ledger           {entries} entries for {len(booked)} booked expenses")
    ok = ok and entries == len(booked)
    if report is not None:
        print(
            f"  nightly report   last 24h: {report.submitted} submitted, {report.booked} booked "
            f"({_eur(report.booked_eur_cents)}), {report.rejected} rejected, "
            f"{report.waiting} waiting, {report.failed} failed, {report.cancelled} cancelled"
        )
    print(f"  elapsed          {elapsed:.2f}s")
    print("look at them:  flowkit runs list --flow expense_approval   (flowkit runs show RUN_ID)")
    return ok


def main(argv: list[str] | None = None) -> int:
    """Emit, decide, wait, summarise; the exit code."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # the expected failures are reported in the summary
        logging.getLogger("flowkit.engine").setLevel(logging.CRITICAL)
    batch = args.batch or datetime.now().strftime("b%Y%m%d-%H%M%S-%f")[:-3]
    main_cases, late = cases(), short_case()
    refusals: list[str] = []
    report = None
    started = time.monotonic()
    try:
        for c in main_cases:
            try:
                (c.run,) = app.emit(EVENT, c.expense, key=f"{batch}:{c.expense_id}")
            except flowkit.InputValidationError as exc:
                first = exc.errors[0]
                where = ".".join(str(p) for p in first["loc"])
                c.outcome = "refused"
                c.detail = f"at emit, nothing enqueued: {where}: {first['msg']}"
        if not app.settings.embedded:
            print("emitted; waiting for `flowkit worker` processes...", file=sys.stderr)
        for c in main_cases:
            act(c, args.timeout, refusals)
        short_window(late, batch, args.timeout)
        for c in [*main_cases, late]:
            classify(c, args.timeout)
        report_run = nightly.submit(datetime.now(timezone.utc), key=f"{batch}:report")
        report = report_run.result(timeout=args.timeout)
        elapsed = time.monotonic() - started
    except flowkit.FlowkitError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    finally:
        app.close()
    return 0 if print_summary([*main_cases, late], batch, refusals, report, elapsed) else 1


if __name__ == "__main__":
    sys.exit(main())
