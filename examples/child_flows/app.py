"""Child flows: loan matching calls a reusable lender-processing flow once per lender.

``lender_processing`` is a workflow of its own (fetch a lender's terms, then
score them) that other flows, or a caller, can start directly. ``loan_matching``
prepares the list of lenders, runs ``lender_processing`` once per lender as a
child run (``matching.call(..., each=True)``), and ranks the results in a join
that receives the children's typed outputs in lender order. A lender whose
processing fails is an item failure of the ``Settled`` join, not the end of the
match.
"""

from __future__ import annotations

from pydantic import BaseModel

import flowkit


class LoanApplication(BaseModel):
    applicant: str
    amount: int
    lenders: list[str]


class LenderRef(BaseModel):
    lender: str
    amount: int


class Terms(BaseModel):
    lender: str
    amount: int
    rate_bp: int


class LenderResult(BaseModel):
    lender: str
    monthly_cents: int


class Ranking(BaseModel):
    best: list[str]
    failed: list[str]


# -- the child flow: one lender -----------------------------------------------------
lender_processing = flowkit.Workflow("lender-processing")


@lender_processing.step(retries=0)
def fetch_terms(ref: LenderRef) -> Terms:
    if ref.lender == "offline-bank":
        raise RuntimeError(f"{ref.lender} did not answer")
    rate = 300 + 25 * (sum(map(ord, ref.lender)) % 12)  # basis points, stable per lender
    return Terms(lender=ref.lender, amount=ref.amount, rate_bp=rate)


@lender_processing.step(after=fetch_terms)
def score(terms: Terms) -> LenderResult:
    yearly = terms.amount * 100 * (10_000 + terms.rate_bp) // 10_000
    return LenderResult(lender=terms.lender, monthly_cents=yearly // 12)


# -- the parent: one child run per lender, then rank --------------------------------
matching = flowkit.Workflow("loan-matching")


@matching.step
def prepare(application: LoanApplication) -> list[LenderRef]:
    return [LenderRef(lender=name, amount=application.amount) for name in application.lenders]


lenders = matching.call(lender_processing, after=prepare, each=True, name="lenders")


@matching.step(after=lenders)
def rank(results: flowkit.Settled[LenderResult]) -> Ranking:
    ordered = sorted(results.results, key=lambda r: r.monthly_cents)
    failed = [str(f.input["lender"]) for f in results.failures if isinstance(f.input, dict)]
    return Ranking(best=[r.lender for r in ordered], failed=failed)


app = flowkit.App("child-flows", flows=[matching])  # lender-processing joins it too
