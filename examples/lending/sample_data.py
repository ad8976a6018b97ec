"""Deterministic sample lenders (with their credit-policy documents) and loan applications.

:func:`seed` empties the example's tables and inserts ``n_lenders`` lenders
and ``n_apps`` applications; the same arguments always give the same rows and
documents. Each lender's criteria are drawn first and then written up in one
of several phrasings (amounts as ``$500,000``, ``$500K`` or ``$1.5 million``,
states as codes or names, industries under other names), so extraction has
something to do; :class:`Seeded` keeps the drawn criteria to check it against.

Documents are written to ``documents`` at run time: plain text, every fourth
one as a one-page PDF when ``pypdf`` is installed to read it, and every tenth
lender's text stored inline instead of as a file. As a script::

    python examples/lending/sample_data.py --lenders 40 --applications 10
    python examples/lending/sample_data.py --add-lender my_policy.pdf    # one more lender
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lend_db
import sqlalchemy as sa
from lend_models import LendingCriteria
from lend_rules import INDUSTRIES, STATES

import flowkit

_CODE_NAME = {code: name.title() for name, code in STATES.items()}
# fmt: off
_PREFIXES = ("Northwind", "Summit", "Harbor", "Keystone", "Pioneer", "Blue Ridge", "Lakeshore",
             "Granite", "Redwood", "Meridian", "Beacon", "Cascade", "Frontier", "Liberty")
_SUFFIXES = ("Capital", "Commercial Finance", "Business Credit", "Funding", "Lending", "Bank")
_PRODUCTS = ("equipment financing", "working capital loans", "term loans", "SBA 7(a) loans")
_BUSINESSES = ("Golden Gate", "Lone Star", "Evergreen", "Desert Sun", "Bayou", "Great Lakes",
               "Rocky Mountain", "Hudson", "Prairie", "Coastal")
# fmt: on
_KINDS = {
    "construction": "Builders",
    "manufacturing": "Fabrication",
    "transportation": "Freight",
    "healthcare": "Family Clinic",
    "retail": "Outfitters",
    "restaurants": "Kitchen",
    "professional services": "Consulting",
    "technology": "Software",
    "agriculture": "Farms",
    "wholesale": "Supply",
    "auto repair": "Auto Care",
}
_BUSY_STATES = ("CA", "TX", "FL", "NY", "IL", "GA", "NC", "OH", "AZ", "WA", "CO", "NJ", "PA")

#: The ways a document states each criterion ({v}: the value, {lo}/{hi}: loan amounts).
_SAY_CREDIT = (
    "Minimum credit score of {v}.",
    "Guarantors need a FICO score of {v} or higher.",
    "Personal credit: {v}+ FICO required.",
)
_SAY_MAX_LOAN = ("Loans up to {hi}.", "Maximum loan amount: {hi}.")
_SAY_LOAN_RANGE = (
    "Loan amounts from {lo} up to {hi}.",
    "We fund deals between {lo} and {hi}.",
    "Loan size: {lo} - {hi}.",
)
_SAY_YEARS = (
    "Minimum time in business: {v} years.",
    "Businesses must have operated for {v}+ years.",
)
_SAY_REVENUE = ("Minimum annual revenue of {v}.", "Annual sales of at least {v}.")
_SAY_INDUSTRIES = ("Eligible industries: {v}.", "Industries we serve: {v}.")
_SAY_NATIONWIDE = ("We lend in all 50 states.", "Available nationwide.")


#: where the generated documents go by default: outside the repository, readable by
#: every worker process on this machine
DOCUMENTS = Path(tempfile.gettempdir()) / "flowkit-lending-documents"


@dataclass
class Seeded:
    """What :func:`seed` inserted: ids, and each lender's drawn criteria."""

    lender_ids: list[int] = field(default_factory=list)
    application_ids: list[int] = field(default_factory=list)
    criteria: dict[int, LendingCriteria] = field(default_factory=dict)
    #: how many documents of each kind: "txt", "pdf", "inline"
    sources: Counter[str] = field(default_factory=Counter)


def _money(rng: random.Random, value: float) -> str:
    if value >= 1_000_000 and rng.random() < 0.6:
        return f"${value / 1e6:g} million"
    if value % 1000 == 0 and rng.random() < 0.4:
        return f"${value / 1000:g}K"
    return f"${value:,.0f}"


def draw_criteria(rng: random.Random) -> LendingCriteria:
    """One lender's credit box (normalised: canonical industries, sorted state codes)."""
    max_loan = rng.choice([150_000, 250_000, 500_000, 750_000, 1_000_000, 1_500_000, 5_000_000])
    min_loan = rng.choice([None, 10_000, 25_000, 50_000, 100_000])
    industries = [] if rng.random() < 0.35 else rng.sample(sorted(INDUSTRIES), rng.randint(3, 7))
    states = [] if rng.random() < 0.4 else rng.sample(sorted(_CODE_NAME), rng.randint(8, 25))
    return LendingCriteria(
        min_credit_score=rng.choice([None, 600, 620, 640, 650, 660, 680, 700, 720]),
        min_loan_amount=min_loan if min_loan is None or min_loan < max_loan else None,
        max_loan_amount=max_loan,
        allowed_industries=sorted(industries),
        allowed_states=sorted(states),
        min_time_in_business_months=rng.choice([None, 6, 12, 18, 24, 36, 60]),
        min_annual_revenue=rng.choice([None, 100_000, 250_000, 500_000, 1_000_000]),
    )


def _listed(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def write_up(rng: random.Random, name: str, c: LendingCriteria) -> str:
    """The criteria as a lender's credit-policy document, in a random phrasing."""
    product = rng.choice(_PRODUCTS)
    lines = [name, f"{product[0].upper()}{product[1:]} - Credit Policy", "", "About us"]
    lines.append(f"{name} provides {product} to small and mid-sized businesses across the country.")
    lines += ["Most decisions are made within 48 hours.", "", "Eligibility"]
    if c.min_credit_score is None:
        lines.append("No minimum credit score; we look at cash flow.")
    else:
        lines.append(rng.choice(_SAY_CREDIT).format(v=c.min_credit_score))
    hi = _money(rng, c.max_loan_amount or 0)
    if c.min_loan_amount is None:
        lines.append(rng.choice(_SAY_MAX_LOAN).format(hi=hi))
    else:
        lo = _money(rng, c.min_loan_amount)
        lines.append(rng.choice(_SAY_LOAN_RANGE).format(lo=lo, hi=hi))
    months = c.min_time_in_business_months
    if months is None:
        lines.append("Start-ups are welcome.")
    elif months % 12 == 0 and rng.random() < 0.6:
        lines.append(rng.choice(_SAY_YEARS).format(v=months // 12))
    else:
        lines.append(f"At least {months} months in business.")
    if c.min_annual_revenue is None:
        lines.append("No revenue minimum.")
    else:
        revenue = _money(rng, c.min_annual_revenue)
        lines.append(rng.choice(_SAY_REVENUE).format(v=revenue))
    if not c.allowed_industries:
        lines.append("We lend to all industries.")
    else:
        names = [rng.choice((i, *INDUSTRIES[i][:1])) for i in c.allowed_industries]
        lines.append(rng.choice(_SAY_INDUSTRIES).format(v=_listed(names)))
    lines.append("Excluded industries: cannabis, gambling and adult entertainment.")
    if not c.allowed_states:
        lines.append(rng.choice(_SAY_NATIONWIDE))
    elif rng.random() < 0.5:
        lines.append(f"Eligible states: {', '.join(c.allowed_states)}.")
    else:
        lines.append(f"We lend in {_listed([_CODE_NAME[s] for s in c.allowed_states])} only.")
    slug = name.lower().replace(" ", "")
    lines += ["", f"Contact: underwriting@{slug}.example"]
    return "\n".join(lines) + "\n"


def write_pdf(path: Path, text: str) -> None:
    """A minimal one-page PDF (Helvetica, text wrapped at 90 characters); no library needed."""
    rows: list[str] = []
    for line in text.splitlines():
        while len(line) > 90:
            cut = line.rfind(" ", 0, 90) if " " in line[1:90] else 90
            rows.append(line[:cut])
            line = line[cut + 1 :]
        rows.append(line)
    esc = [r.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for r in rows[:52]]
    content = "BT /F1 10 Tf 14 TL 50 760 Td " + " ".join(f"({r}) Tj T*" for r in esc) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        "/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
    ]
    out, offsets = "%PDF-1.4\n", []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n"
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    path.write_bytes(out.encode("latin-1"))


def application(rng: random.Random, i: int) -> dict[str, Any]:
    """One loan application's row (the industry sometimes under another name)."""
    industry = rng.choice(sorted(INDUSTRIES))
    amount = rng.choice([25_000, 50_000, 75_000, 100_000, 150_000, 250_000, 400_000, 750_000])
    return {
        "id": i,
        "business_name": f"{rng.choice(_BUSINESSES)} {_KINDS[industry]} LLC",
        "industry": rng.choice((industry, industry.title(), *INDUSTRIES[industry][:1])),
        "state": rng.choice(_BUSY_STATES),
        "credit_score": rng.randint(600, 800),
        "requested_amount": float(amount),
        "time_in_business_months": rng.randint(6, 180),
        "annual_revenue": float(round(amount * rng.uniform(1.5, 10), -4)),
    }


def seed(
    n_lenders: int,
    n_apps: int,
    *,
    documents: Path,
    seed: int = 7,
    pdf: bool | None = None,
    app: flowkit.App | None = None,
) -> Seeded:
    """Replace the example's rows with ``n_lenders`` lenders and ``n_apps`` applications.

    Parameters:
        documents: the folder for the lenders' documents (created; use an
            absolute path shared by every worker).
        seed: the random seed; the same arguments give the same data.
        pdf: write every fourth document as PDF; default: when pypdf is installed.
        app: the App whose database to use (default: ``FLOWKIT_DATABASE_URL``).
    """
    rng = random.Random(seed)
    pdf = importlib.util.find_spec("pypdf") is not None if pdf is None else pdf
    documents.mkdir(parents=True, exist_ok=True)
    out, lenders = Seeded(), []
    for i in range(1, n_lenders + 1):
        # 14 prefixes x 6 suffixes: unique names for 42 lenders, then numbered.
        name = f"{_PREFIXES[(i - 1) % len(_PREFIXES)]} {_SUFFIXES[(i - 1) % len(_SUFFIXES)]}"
        name += f" {(i - 1) // 42 + 1}" if i > 42 else ""
        criteria = draw_criteria(rng)
        text = write_up(rng, name, criteria)
        row: dict[str, Any] = {"id": i, "name": name, "active": True, "status": "uploaded"}
        row.update(document_path=None, document_text=None)
        kind = "inline" if i % 10 == 0 else "pdf" if pdf and i % 4 == 0 else "txt"
        out.sources[kind] += 1
        if kind == "inline":
            row["document_text"] = text
        else:
            path = documents.resolve() / f"lender-{i:04d}.{kind}"
            if kind == "pdf":
                write_pdf(path, text)
            else:
                path.write_text(text, encoding="utf-8")
            row["document_path"] = str(path)
        lenders.append(row)
        out.lender_ids.append(i)
        out.criteria[i] = criteria
    apps = [application(rng, i) for i in range(1, n_apps + 1)]
    out.application_ids = [a["id"] for a in apps]
    lend_db.reset(app)
    with lend_db.engine(app).begin() as conn:
        if lenders:
            conn.execute(lend_db.lenders.insert(), lenders)
        if apps:
            conn.execute(lend_db.loan_applications.insert(), apps)
    return out


def add_lender(document: Path, name: str | None = None) -> int:
    """Insert one more lender whose document is the file ``document``; its id."""
    row = {"name": name or document.stem.replace("_", " ").title(), "active": True}
    row.update(document_path=str(document.resolve()), status="uploaded")
    lenders = lend_db.lenders
    with lend_db.engine().begin() as conn:
        # The next id by hand: seed() inserts explicit ids, which PostgreSQL's id
        # sequence never sees, so letting it pick would collide with lender 1.
        last = conn.execute(sa.select(sa.func.max(lenders.c.id))).scalar_one()
        lender_id = int(last or 0) + 1
        conn.execute(lenders.insert().values(id=lender_id, **row))
        return lender_id


def main(argv: list[str] | None = None) -> None:
    """Create the tables and seed them (``FLOWKIT_DATABASE_URL``, default ./flowkit.db)."""
    parser = argparse.ArgumentParser(description="Seed the lending example's tables.")
    parser.add_argument(
        "--add-lender",
        type=Path,
        metavar="FILE",
        help="only add one lender with this document (.txt or .pdf) and print its id",
    )
    parser.add_argument("--lenders", type=int, default=40, help="lenders (40)")
    parser.add_argument("--applications", type=int, default=10, help="applications (10)")
    parser.add_argument(
        "--documents",
        type=Path,
        default=DOCUMENTS,
        help=f"folder for the lender documents ({DOCUMENTS})",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    args = parser.parse_args(argv)
    lend_db.create_tables()
    if args.add_lender is not None:
        if not args.add_lender.is_file():
            parser.error(f"no file {args.add_lender}")
        print(f"lender {add_lender(args.add_lender)}: {args.add_lender.resolve()}")
        return
    s = seed(args.lenders, args.applications, documents=args.documents, seed=args.seed)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(s.sources.items()))
    print(
        f"seeded {len(s.lender_ids)} lenders (documents: {kinds}) and "
        f"{len(s.application_ids)} applications in {lend_db.database_url()}"
    )


if __name__ == "__main__":
    main()
