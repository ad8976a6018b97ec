"""The values carried between the steps of the two lending workflows.

Event payloads are small references (``{"lender_id": 7}``,
``{"application_id": 3}``): the rows live in the example's own tables
(:mod:`lend_db`), and each step reads what it needs, so a retry or a
redelivered message sees the current row, not a stale copy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

#: How a lender's criteria were extracted: by a model, or by the regex fallback.
Method = Literal["llm", "rules"]


# -- lender processing ----------------------------------------------------------
class LenderUploaded(BaseModel):
    """The payload of ``lender:document:uploaded``."""

    lender_id: int = Field(gt=0)


class LenderRecord(BaseModel):
    """The lender row, as fetched by the first step."""

    lender_id: int
    name: str
    document_path: str | None = None
    document_text: str | None = None


class LenderDocument(BaseModel):
    """The text of the lender's uploaded document."""

    lender_id: int
    name: str
    source: Literal["txt", "pdf", "inline"]
    text: str


class LendingCriteria(BaseModel):
    """A lender's credit box, as extracted from its document.

    ``None`` (or an empty list) means the document sets no limit on that field.
    The descriptions guide the model's structured output.
    """

    min_credit_score: int | None = Field(default=None, description="minimum personal FICO score")
    min_loan_amount: float | None = Field(default=None, description="smallest loan, in US dollars")
    max_loan_amount: float | None = Field(default=None, description="largest loan, in US dollars")
    allowed_industries: list[str] = Field(
        default_factory=list, description="industries the lender funds; empty if all industries"
    )
    allowed_states: list[str] = Field(
        default_factory=list,
        description="US states the lender funds (two-letter codes); empty if nationwide",
    )
    min_time_in_business_months: int | None = Field(
        default=None, description="minimum time in business, in months (convert years to months)"
    )
    min_annual_revenue: float | None = Field(
        default=None, description="minimum annual revenue, in US dollars"
    )


class ExtractedCriteria(BaseModel):
    """The extraction step's output: the raw criteria and how they were found."""

    lender_id: int
    name: str
    method: Method
    criteria: LendingCriteria


class ValidatedCriteria(BaseModel):
    """Criteria normalised (state codes, industry names), clamped and annotated."""

    lender_id: int
    name: str
    method: Method
    criteria: LendingCriteria
    flags: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class LenderProcessed(BaseModel):
    """The run's result: what was stored on the lender row."""

    lender_id: int
    name: str
    status: Literal["processed", "needs_review"]
    method: Method
    criteria: LendingCriteria
    flags: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


# -- loan matching --------------------------------------------------------------
class LoanApplicationRef(BaseModel):
    """The payload of ``loan:application:uploaded``."""

    application_id: int = Field(gt=0)


class LenderRef(BaseModel):
    """One (application, lender) pair to score: an item of the fan-out."""

    application_id: int
    lender_id: int


class MatchResult(BaseModel):
    """How one lender's criteria fit one application."""

    application_id: int
    lender_id: int
    lender_name: str
    eligible: bool
    score: float = Field(ge=0, le=100)
    reasons: list[str] = Field(default_factory=list)
    #: the criteria the application fails, e.g. ``["credit_score", "state"]``
    failed: list[str] = Field(default_factory=list)


class RankedLender(BaseModel):
    """An eligible lender in an application's ranking."""

    rank: int
    lender_id: int
    lender_name: str
    score: float
    reasons: list[str] = Field(default_factory=list)


class Ranking(BaseModel):
    """The matching run's result, also stored on the application row."""

    application_id: int
    lenders_considered: int
    eligible: int
    ranked: list[RankedLender] = Field(default_factory=list)
    #: how many lenders each criterion excluded (a lender may fail several)
    declined: dict[str, int] = Field(default_factory=dict)
