"""Reference tables and the rule-based criteria extractor.

:func:`extract_by_rules` is the fallback of the extraction step when no
OpenAI-compatible endpoint is configured: regular expressions over the
document's sentences ("minimum credit score of 680", "loans from $25,000 up
to $500,000", "at least 2 years in business", "Industries: ...",
"States: ..."). It returns the phrases as written; :func:`normalize_states`
and :func:`normalize_industries` (used by the validation step for both
extraction methods) map them to state codes and canonical industry names.
"""

from __future__ import annotations

import re

from lend_models import LendingCriteria

STATES: dict[str, str] = {
    "alabama": "AL", "alaska": "AK", "arizona": "AZ", "arkansas": "AR", "california": "CA",
    "colorado": "CO", "connecticut": "CT", "delaware": "DE", "district of columbia": "DC",
    "florida": "FL", "georgia": "GA", "hawaii": "HI", "idaho": "ID", "illinois": "IL",
    "indiana": "IN", "iowa": "IA", "kansas": "KS", "kentucky": "KY", "louisiana": "LA",
    "maine": "ME", "maryland": "MD", "massachusetts": "MA", "michigan": "MI",
    "minnesota": "MN", "mississippi": "MS", "missouri": "MO", "montana": "MT",
    "nebraska": "NE", "nevada": "NV", "new hampshire": "NH", "new jersey": "NJ",
    "new mexico": "NM", "new york": "NY", "north carolina": "NC", "north dakota": "ND",
    "ohio": "OH", "oklahoma": "OK", "oregon": "OR", "pennsylvania": "PA",
    "rhode island": "RI", "south carolina": "SC", "south dakota": "SD", "tennessee": "TN",
    "texas": "TX", "utah": "UT", "vermont": "VT", "virginia": "VA", "washington": "WA",
    "west virginia": "WV", "wisconsin": "WI", "wyoming": "WY",
}  # fmt: skip
STATE_CODES = frozenset(STATES.values())

#: canonical industry -> other names documents and applications use for it
INDUSTRIES: dict[str, tuple[str, ...]] = {
    "construction": ("contractors", "contracting", "builders"),
    "manufacturing": ("manufacturers", "fabrication"),
    "transportation": ("trucking", "logistics", "freight", "transport"),
    "healthcare": ("medical", "dental", "health care", "clinics"),
    "retail": ("retailers", "e-commerce", "ecommerce", "stores"),
    "restaurants": ("restaurant", "food service", "food and beverage", "hospitality"),
    "professional services": ("consulting", "accounting", "legal", "services"),
    "technology": ("software", "it", "it services", "saas", "tech"),
    "agriculture": ("farming", "farms", "agribusiness"),
    "wholesale": ("distribution", "distributors", "wholesalers"),
    "auto repair": ("automotive", "auto services", "auto shops"),
}
_INDUSTRY_ALIASES = {
    alias: name for name, aliases in INDUSTRIES.items() for alias in (name, *aliases)
}

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_MONEY = re.compile(r"\$\s*(\d[\d,]*(?:\.\d+)?)\s*(million|thousand|mm|m|k)?\b", re.IGNORECASE)
_MULTIPLIER = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mm": 1e6, "million": 1e6}
_CREDIT = re.compile(r"(?:credit score|fico|credit)\D{0,40}?\b([3-8]\d{2})\b", re.IGNORECASE)
_CREDIT_BEFORE = re.compile(r"\b([3-8]\d{2})\s*\+?\s*(?:fico|credit score)", re.IGNORECASE)
_TENURE = re.compile(r"(\d+(?:\.\d+)?)\s*\+?\s*(years?|yrs?|months?|mos?)\b", re.IGNORECASE)
_MAX_WORDS = re.compile(r"up to|maximum|max\b|no more than|not exceed|ceiling", re.IGNORECASE)
_MIN_WORDS = re.compile(r"minimum|min\b|at least|from|starting|no less than|floor", re.IGNORECASE)
_LIST_HEAD = re.compile(r"^.*?\b(?:include|including|in|to)\b\s*", re.IGNORECASE)
#: list separators; "and"/"or" only in lower case, so that Oregon's code OR stays an item
_SPLIT = re.compile(r"\s*(?:,|;|/|&|\band\b|\bor\b)\s*")
_STATES_SENTENCE = re.compile(
    r"\bstates?\b|nationwide|\b(?:lend|lending|operate|operating|available) (?:only )?in\b"
)
_EVERYWHERE = re.compile(r"nationwide|all 50 states|all states|any state", re.IGNORECASE)
_ANY_INDUSTRY = re.compile(r"all industries|any industry|industry agnostic", re.IGNORECASE)
_EXCLUSION = re.compile(r"exclud|prohibit|restricted|do not|don't|except", re.IGNORECASE)


def parse_money(match: re.Match[str]) -> float:
    """``$1.5 million`` -> 1500000.0, ``$250K`` -> 250000.0, ``$25,000`` -> 25000.0."""
    value = float(match.group(1).replace(",", ""))
    return value * _MULTIPLIER.get((match.group(2) or "").lower(), 1.0)


def sentences(text: str) -> list[str]:
    """The document split into sentences and list items, bullets stripped.

    Lines wrapped by a PDF's text layer (or an editor) are joined first: a line
    that does not end a sentence continues on the next one, unless that one is
    a list item or comes after a blank line.
    """
    lines: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        for raw in paragraph.splitlines():
            line = raw.strip()
            if not line:
                continue
            bullet = line[0] in "-*•"
            if lines and lines[-1] and not bullet and not lines[-1].endswith((".", "!", "?")):
                lines[-1] += " " + line
            else:
                lines.append(line.lstrip("-*•").strip())
        lines.append("")  # a paragraph's last line continues nowhere
    parts = (p.strip() for line in lines for p in _SENTENCE.split(line))
    return [p for p in parts if p]


def _items(sentence: str) -> list[str]:
    """``"Industries: construction, retail and trucking."`` -> the three names."""
    # After the last colon ("Eligible states: CA, NV"), else after "in"/"include"/"to".
    body = sentence.rsplit(":", 1)[1] if ":" in sentence else _LIST_HEAD.sub("", sentence, 1)
    body = re.sub(r"\b(?:only|the states of)\b", "", body, flags=re.IGNORECASE).rstrip(".")
    return [item.strip(" .") for item in _SPLIT.split(body) if item.strip(" .")]


def extract_by_rules(text: str) -> LendingCriteria:
    """Find the criteria a lender document states, sentence by sentence.

    The first sentence that states a field wins; what no sentence states stays
    unset (no limit). Deterministic: the same text gives the same criteria.
    """
    found: dict[str, object] = {}
    for sentence in sentences(text):
        low = sentence.lower()
        amounts = [parse_money(m) for m in _MONEY.finditer(sentence)]
        if "revenue" in low or "sales" in low:
            if amounts:
                found.setdefault("min_annual_revenue", amounts[0])
        elif "credit" in low or "fico" in low:
            m = _CREDIT.search(sentence) or _CREDIT_BEFORE.search(sentence)
            if m:
                found.setdefault("min_credit_score", int(m.group(1)))
        elif "business" in low and _TENURE.search(sentence) and not amounts:
            m = _TENURE.search(sentence)
            assert m is not None
            months = float(m.group(1)) * (12 if m.group(2).lower().startswith("y") else 1)
            found.setdefault("min_time_in_business_months", round(months))
        elif "industr" in low and not _EXCLUSION.search(sentence):
            found.setdefault(
                "allowed_industries", [] if _ANY_INDUSTRY.search(low) else _items(sentence)
            )
        elif _STATES_SENTENCE.search(low) and "united states" not in low:
            found.setdefault("allowed_states", [] if _EVERYWHERE.search(low) else _items(sentence))
        elif amounts and re.search(r"loan|amount|fund|financ|borrow|deal|ticket", low):
            _loan_amounts(sentence, amounts, found)
    return LendingCriteria.model_validate(found)


def _loan_amounts(sentence: str, amounts: list[float], found: dict[str, object]) -> None:
    """Min and max loan amount from "$X to $Y", "$X - $Y", "up to $Y", "minimum $X"."""
    if len(amounts) >= 2:
        found.setdefault("min_loan_amount", min(amounts[:2]))
        found.setdefault("max_loan_amount", max(amounts[:2]))
    elif _MAX_WORDS.search(sentence):
        found.setdefault("max_loan_amount", amounts[0])
    elif _MIN_WORDS.search(sentence):
        found.setdefault("min_loan_amount", amounts[0])


def normalize_states(values: list[str]) -> tuple[list[str], list[str]]:
    """Two-letter codes for state names or codes, sorted; and the values not recognised."""
    codes: set[str] = set()
    unknown: list[str] = []
    for value in values:
        v = value.strip().strip(".").lower()
        if v.upper() in STATE_CODES:
            codes.add(v.upper())
        elif v in STATES:
            codes.add(STATES[v])
        elif v:
            unknown.append(value)
    return sorted(codes), unknown


def normalize_industries(values: list[str]) -> tuple[list[str], list[str]]:
    """Canonical industry names, sorted; and the values not recognised (kept, lowercased)."""
    names: set[str] = set()
    unknown: list[str] = []
    for value in values:
        v = re.sub(r"\s+", " ", value.strip().strip(".").lower())
        if v in _INDUSTRY_ALIASES:
            names.add(_INDUSTRY_ALIASES[v])
        elif v.rstrip("s") in _INDUSTRY_ALIASES:
            names.add(_INDUSTRY_ALIASES[v.rstrip("s")])
        elif v:
            names.add(v)
            unknown.append(value)
    return sorted(names), unknown


def canonical_industry(value: str) -> str:
    """An application's industry in the names lender criteria use."""
    names, _ = normalize_industries([value])
    return names[0] if names else value.strip().lower()
