"""The steps of the lender-processing workflow (``lender:document:uploaded``).

``fetch_lender -> extract_text -> extract_criteria -> validate_criteria -> update_lender``,
the five steps of the Hatchet lender processing workflow. Each is a plain
function of its input and, where it needs one, the :class:`flowkit.Context`
(the workflow is assembled in ``app.py``). Only the first and the last touch
the database (the App's, found through ``ctx.app``), and both are safe to repeat.

``extract_criteria`` asks a model through :mod:`flowkit.llm` when
``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set, and otherwise falls back to
the regex extractor of :mod:`lend_rules`, with a warning.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Literal

import lend_db
import sqlalchemy as sa
from lend_models import (
    ExtractedCriteria,
    LenderDocument,
    LenderProcessed,
    LenderRecord,
    LenderUploaded,
    LendingCriteria,
    ValidatedCriteria,
)
from lend_rules import extract_by_rules, normalize_industries, normalize_states

import flowkit

#: characters of a document sent to the model (about 8k tokens)
MAX_PROMPT_CHARS = 32_000
FALLBACK_WARNING = (
    "neither OPENAI_API_KEY nor OPENAI_BASE_URL is set: extracting criteria with rules "
    "instead of a model"
)
SYSTEM_PROMPT = (
    "You read a commercial lender's credit policy and extract its lending criteria. "
    "Use only what the document states; leave a field empty when it sets no limit. "
    "Amounts in US dollars as plain numbers, time in business in months, states as "
    "two-letter codes, industries as short lowercase names."
)


def fetch_lender(event: LenderUploaded, ctx: flowkit.Context) -> LenderRecord:
    """Load the lender row and mark it ``processing``.

    Raises:
        PermanentError: no such lender (retrying would not create it).
    """
    with lend_db.engine(ctx.app).begin() as conn:
        row = conn.execute(
            sa.select(lend_db.lenders).where(lend_db.lenders.c.id == event.lender_id)
        ).first()
        if row is None:
            raise flowkit.PermanentError(f"lender {event.lender_id} does not exist")
        conn.execute(
            lend_db.lenders.update()
            .where(lend_db.lenders.c.id == event.lender_id)
            .values(status="processing")
        )
    return LenderRecord(
        lender_id=row.id,
        name=row.name,
        document_path=row.document_path,
        document_text=row.document_text,
    )


def extract_text(lender: LenderRecord) -> LenderDocument:
    """The document's text: a ``.txt`` file, a ``.pdf`` (with ``pypdf``) or the inline text.

    Raises:
        PermanentError: no document, a missing file, a PDF without ``pypdf``
            installed, or a PDF with no text layer (scans need OCR, which this
            example does not include).
    """
    if lender.document_path is None:
        if not lender.document_text:
            raise flowkit.PermanentError(f"lender {lender.lender_id} has no document")
        return _document(lender, "inline", lender.document_text)
    path = Path(lender.document_path)
    if not path.is_file():
        raise flowkit.PermanentError(f"lender {lender.lender_id}: no file {path}")
    if path.suffix.lower() == ".pdf":
        return _document(lender, "pdf", pdf_text(path))
    return _document(lender, "txt", path.read_text(encoding="utf-8", errors="replace"))


def pdf_text(path: Path) -> str:
    """The text layer of every page of a PDF, with the optional ``pypdf`` package."""
    try:
        from pypdf import PdfReader
    except ImportError:
        raise flowkit.PermanentError(
            f"{path.name} is a PDF: reading PDFs needs the optional pypdf package "
            "(pip install pypdf), in every worker"
        ) from None
    pages = [page.extract_text() or "" for page in PdfReader(path).pages]
    return "\n".join(pages)


def _document(lender: LenderRecord, source: str, text: str) -> LenderDocument:
    text = text.strip()
    if not text:
        raise flowkit.PermanentError(
            f"lender {lender.lender_id}: the document has no text (a scanned PDF needs OCR)"
        )
    return LenderDocument.model_validate(
        {"lender_id": lender.lender_id, "name": lender.name, "source": source, "text": text}
    )


def llm_configured() -> bool:
    """Whether :mod:`flowkit.llm` has an endpoint: OpenAI itself or a compatible server."""
    return bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))


def _llm_module(ctx: flowkit.Context) -> ModuleType | None:
    """:mod:`flowkit.llm` if an endpoint is configured and it is installed; else warn, ``None``."""
    if not llm_configured():
        ctx.logger.warning(FALLBACK_WARNING)
        return None
    try:
        from flowkit import llm  # imported only on this path
    except ImportError:
        ctx.logger.warning("flowkit.llm is not available: extracting criteria with rules")
        return None
    return llm


def extract_criteria(doc: LenderDocument, ctx: flowkit.Context) -> ExtractedCriteria:
    """Structured criteria from the text: by the model if configured, else by rules.

    The model's answer is validated into :class:`LendingCriteria` (with re-asks
    on invalid output) and cached by flowkit, so processing the same document
    again does not call the model again. Rate limits become retries with backoff.
    """
    llm = _llm_module(ctx)
    if llm is not None:
        criteria = llm.structured(
            LendingCriteria,
            f"Lender: {doc.name}\n\n{doc.text[:MAX_PROMPT_CHARS]}",
            ctx=ctx,
            system=SYSTEM_PROMPT,
        )
        method = "llm"
    else:
        criteria = extract_by_rules(doc.text)
        method = "rules"
    return ExtractedCriteria.model_validate(
        {"lender_id": doc.lender_id, "name": doc.name, "method": method, "criteria": criteria}
    )


def validate_criteria(extracted: ExtractedCriteria) -> ValidatedCriteria:
    """Normalise states and industries, clamp out-of-range values, derive flags.

    Applied to both extraction methods: a model may answer "California" or
    "Trucking" as readily as the rules do.
    """
    c = extracted.criteria.model_copy()
    warnings: list[str] = []
    c.allowed_states, bad_states = normalize_states(c.allowed_states)
    if bad_states:
        warnings.append(f"ignored unknown states: {', '.join(bad_states)}")
    c.allowed_industries, new_industries = normalize_industries(c.allowed_industries)
    if new_industries:
        warnings.append(f"industries outside the reference list: {', '.join(new_industries)}")
    if c.min_credit_score is not None and not 300 <= c.min_credit_score <= 850:
        warnings.append(f"credit score {c.min_credit_score} clamped to 300..850")
        c.min_credit_score = min(max(c.min_credit_score, 300), 850)
    for field in ("min_loan_amount", "max_loan_amount", "min_annual_revenue"):
        value = getattr(c, field)
        if value is not None and value <= 0:
            warnings.append(f"{field} {value:g} dropped: not positive")
            setattr(c, field, None)
    if c.min_time_in_business_months is not None and c.min_time_in_business_months < 0:
        c.min_time_in_business_months = 0
    lo, hi = c.min_loan_amount, c.max_loan_amount
    if lo is not None and hi is not None and lo > hi:
        warnings.append("minimum and maximum loan amount were swapped")
        c.min_loan_amount, c.max_loan_amount = hi, lo
    return ValidatedCriteria(
        lender_id=extracted.lender_id,
        name=extracted.name,
        method=extracted.method,
        criteria=c,
        flags=derive_flags(c),
        warnings=warnings,
    )


def derive_flags(c: LendingCriteria) -> list[str]:
    """Short labels for the lender's box, e.g. ``nationwide``, ``startup_friendly``."""
    flags = []
    if not c.allowed_states:
        flags.append("nationwide")
    if not c.allowed_industries:
        flags.append("all_industries")
    if c.min_credit_score is not None and c.min_credit_score >= 720:
        flags.append("prime_only")
    if c.min_credit_score is None or c.min_credit_score < 620:
        flags.append("subprime_ok")
    if c.min_time_in_business_months is None or c.min_time_in_business_months <= 12:
        flags.append("startup_friendly")
    if c.max_loan_amount is not None and c.max_loan_amount >= 1_000_000:
        flags.append("large_ticket")
    return flags


def update_lender(validated: ValidatedCriteria, ctx: flowkit.Context) -> LenderProcessed:
    """Store the criteria on the lender: ``processed``, or ``needs_review`` if none were found.

    A lender in ``needs_review`` is left out of matching: a document from which
    nothing was extracted would otherwise match every application.
    """
    c = validated.criteria
    empty = c == LendingCriteria()
    status: Literal["processed", "needs_review"] = "needs_review" if empty else "processed"
    with lend_db.engine(ctx.app).begin() as conn:
        conn.execute(
            lend_db.lenders.update()
            .where(lend_db.lenders.c.id == validated.lender_id)
            .values(
                criteria=c.model_dump(mode="json"),
                flags=validated.flags,
                extraction=validated.method,
                status=status,
            )
        )
    return LenderProcessed(
        lender_id=validated.lender_id,
        name=validated.name,
        status=status,
        method=validated.method,
        criteria=c,
        flags=validated.flags,
        warnings=validated.warnings + (["no criteria found in the document"] if empty else []),
    )
