"""The steps of the loan-matching workflow (``loan:application:uploaded``).

``check -> unprocessed -> process_lenders -> prepare -> match (one task per lender,
in parallel) -> finalize``. The last three are the Hatchet loan matching workflow;
before them, every active lender whose document is uploaded but not processed yet
is processed first, by the lender-processing workflow run as a child flow (one
child run per lender, ``app.py``), so an application never ranks against lenders
that were only waiting for their own processing. Where the Hatchet step scored
every lender with asyncio inside one 300-second step, here each
lender is its own task: spread over every worker process, retried on its
own, and visible on its own in ``flowkit runs show``.

Every write is keyed: ``matches`` has one row per (application, lender), so
a retried or redelivered ``match`` updates its row instead of adding one.
"""

from __future__ import annotations

from typing import Any

import lend_db
import sqlalchemy as sa
from lend_models import (
    LenderProcessed,
    LenderRef,
    LenderUploaded,
    LendingCriteria,
    LoanApplicationRef,
    MatchResult,
    RankedLender,
    Ranking,
)
from lend_rules import canonical_industry

import flowkit


def check(ref: LoanApplicationRef, ctx: flowkit.Context) -> LoanApplicationRef:
    """The application exists; the later steps read it by this reference.

    Raises:
        PermanentError: no such application (retrying would not create it).
    """
    apps = lend_db.loan_applications
    with lend_db.engine(ctx.app).begin() as conn:
        found = conn.execute(sa.select(apps.c.id).where(apps.c.id == ref.application_id)).first()
    if found is None:
        raise flowkit.PermanentError(f"loan application {ref.application_id} does not exist")
    return ref


def unprocessed(check: LoanApplicationRef, ctx: flowkit.Context) -> list[LenderUploaded]:
    """The active lenders whose document is uploaded and not processed yet: the next step
    runs the lender-processing workflow for each, as a child run."""
    lenders = lend_db.lenders
    with lend_db.engine(ctx.app).begin() as conn:
        ids = conn.execute(
            sa.select(lenders.c.id)
            .where(lenders.c.active.is_(True), lenders.c.status == "uploaded")
            .order_by(lenders.c.id)
        ).scalars()
        return [LenderUploaded(lender_id=i) for i in ids]


def prepare(
    check: LoanApplicationRef,
    process_lenders: flowkit.Settled[LenderProcessed],
    ctx: flowkit.Context,
) -> list[LenderRef] | flowkit.Stop:
    """Load the active, processed lenders, create a ``pending`` match row for each, fan out
    over them.

    ``process_lenders`` is what the child runs did (a lender whose processing failed is
    one of its failures, and is not matched). With no active, processed lender there is
    nothing to match: the run ends here with an empty ranking (``flowkit.Stop``), stored
    on the application.
    """
    for failure in process_lenders.failures:
        ctx.logger.warning("a lender's processing failed: %s", failure.error)
    apps, lenders, matches = lend_db.loan_applications, lend_db.lenders, lend_db.matches
    app_id = check.application_id
    with lend_db.engine(ctx.app).begin() as conn:
        lender_ids = list(
            conn.execute(
                sa.select(lenders.c.id)
                .where(lenders.c.active.is_(True), lenders.c.status == "processed")
                .order_by(lenders.c.id)
            ).scalars()
        )
        # Matches of an earlier matching with lenders that are no longer active.
        conn.execute(
            matches.delete().where(
                matches.c.application_id == app_id, matches.c.lender_id.not_in(lender_ids)
            )
        )
        pending = {"status": "pending", "eligible": None, "score": None, "reasons": None}
        rows = [{"application_id": app_id, "lender_id": i, **pending} for i in lender_ids]
        lend_db.upsert(conn, matches, rows, key=["application_id", "lender_id"])
        ranking = (
            None if lender_ids else Ranking(application_id=app_id, lenders_considered=0, eligible=0)
        )
        conn.execute(
            apps.update()
            .where(apps.c.id == app_id)
            .values(
                status="matching" if lender_ids else "matched",
                ranking=ranking.model_dump(mode="json") if ranking else None,
            )
        )
    ctx.logger.info("matching application %s against %d lenders", app_id, len(lender_ids))
    if ranking is not None:
        return flowkit.Stop(ranking.model_dump(mode="json"), reason="no active lenders")
    return [LenderRef(application_id=app_id, lender_id=lender_id) for lender_id in lender_ids]


def match(ref: LenderRef, ctx: flowkit.Context) -> MatchResult:
    """Score the application against one lender's criteria and write the match row."""
    apps, lenders = lend_db.loan_applications, lend_db.lenders
    with lend_db.engine(ctx.app).begin() as conn:
        application = conn.execute(sa.select(apps).where(apps.c.id == ref.application_id)).one()
        lender = conn.execute(sa.select(lenders).where(lenders.c.id == ref.lender_id)).one()
        if lender.active and lender.criteria is not None:
            criteria = LendingCriteria.model_validate(lender.criteria)
            eligible, score, reasons, failed = evaluate(application._mapping, criteria)
        else:
            eligible, score, reasons, failed = False, 0.0, ["lender is not active"], ["active"]
        row = {
            "application_id": ref.application_id,
            "lender_id": ref.lender_id,
            "status": "scored",
            "eligible": eligible,
            "score": score,
            "reasons": reasons,
        }
        lend_db.upsert(conn, lend_db.matches, [row], key=["application_id", "lender_id"])
    return MatchResult(
        application_id=ref.application_id,
        lender_id=ref.lender_id,
        lender_name=lender.name,
        eligible=eligible,
        score=score,
        reasons=reasons,
        failed=failed,
    )


def _money(value: float) -> str:
    return f"${value:,.0f}"


def _share(value: float, full: float) -> float:
    """``value / full`` clamped to 0..1."""
    return max(0.0, min(1.0, value / full)) if full > 0 else 1.0


def evaluate(application: Any, c: LendingCriteria) -> tuple[bool, float, list[str], list[str]]:
    """Eligibility, a 0-100 score, the reasons, and the failed criteria.

    Every stated criterion is a hard limit: failing one makes the lender
    ineligible (score 0) and the reasons say which. Otherwise the score adds
    up headroom over the limits: credit score (35), loan size within the
    lender's range (20), revenue cover of the loan (20), time in business (15)
    and how specifically the lender targets the industry and state (10).
    """
    credit, amount = application["credit_score"], application["requested_amount"]
    months, revenue = application["time_in_business_months"], application["annual_revenue"]
    industry, state = canonical_industry(application["industry"]), application["state"]
    checks = [
        ("credit_score", c.min_credit_score is not None and credit < c.min_credit_score,
         f"credit score {credit} is below the {c.min_credit_score} minimum"),
        ("loan_amount", c.min_loan_amount is not None and amount < c.min_loan_amount,
         f"{_money(amount)} is below the {_money(c.min_loan_amount or 0)} minimum loan"),
        ("loan_amount", c.max_loan_amount is not None and amount > c.max_loan_amount,
         f"{_money(amount)} is above the {_money(c.max_loan_amount or 0)} maximum loan"),
        ("industry", bool(c.allowed_industries) and industry not in c.allowed_industries,
         f"does not fund {industry}"),
        ("state", bool(c.allowed_states) and state not in c.allowed_states,
         f"does not lend in {state}"),
        ("time_in_business",
         c.min_time_in_business_months is not None and months < c.min_time_in_business_months,
         f"{months} months in business, {c.min_time_in_business_months} required"),
        ("revenue", c.min_annual_revenue is not None and revenue < c.min_annual_revenue,
         f"revenue {_money(revenue)} is below the {_money(c.min_annual_revenue or 0)} minimum"),
    ]  # fmt: skip
    failed = [(name, reason) for name, fails, reason in checks if fails]
    if failed:
        return False, 0.0, [r for _, r in failed], sorted({n for n, _ in failed})

    floor = c.min_credit_score if c.min_credit_score is not None else 550
    points = 35 * _share(credit - floor, 150)
    reasons = [
        f"credit {credit}, {credit - floor} over the {floor} minimum"
        if c.min_credit_score is not None
        else f"credit {credit}, no minimum"
    ]
    if c.max_loan_amount is not None:
        points += 20 * (1 - 0.5 * _share(amount, c.max_loan_amount))
        pct = 100 * amount / c.max_loan_amount
        reasons.append(f"{pct:.0f}% of the {_money(c.max_loan_amount)} maximum")
    else:
        points += 15
        reasons.append("no maximum loan")
    cover = revenue / amount if amount else 0.0
    points += 20 * _share(cover, 4)
    reasons.append(f"revenue {cover:.1f}x the loan")
    tib_floor = c.min_time_in_business_months or 0
    points += 15 * _share(months - tib_floor, 36)
    reasons.append(
        f"{months} months in business, {tib_floor} required"
        if tib_floor
        else f"{months} months in business, no minimum"
    )
    points += 6 if c.allowed_industries else 3
    points += 4 if c.allowed_states else 2
    if c.allowed_industries:
        reasons.append(f"{industry} specialist")
    return True, round(points, 1), reasons, []


def finalize(matches: list[MatchResult], ctx: flowkit.Context) -> Ranking:
    """Rank the eligible lenders by score and store the ranking on the application.

    ``matches`` holds every lender's result, in the order ``prepare`` listed
    them; it is never empty (``prepare`` stops the run when there is no lender).
    """
    app_id = matches[0].application_id
    eligible = sorted((m for m in matches if m.eligible), key=lambda m: (-m.score, m.lender_id))
    declined: dict[str, int] = {}
    for m in matches:
        for name in m.failed:
            declined[name] = declined.get(name, 0) + 1
    ranking = Ranking(
        application_id=app_id,
        lenders_considered=len(matches),
        eligible=len(eligible),
        ranked=[
            RankedLender(
                rank=i,
                lender_id=m.lender_id,
                lender_name=m.lender_name,
                score=m.score,
                reasons=m.reasons,
            )
            for i, m in enumerate(eligible, 1)
        ],
        declined=dict(sorted(declined.items(), key=lambda kv: (-kv[1], kv[0]))),
    )
    apps = lend_db.loan_applications
    with lend_db.engine(ctx.app).begin() as conn:
        conn.execute(
            apps.update()
            .where(apps.c.id == app_id)
            .values(status="matched", ranking=ranking.model_dump(mode="json"))
        )
    return ranking
