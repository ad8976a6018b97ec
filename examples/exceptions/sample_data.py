"""Deterministic sample exceptions: several tenants, messy inputs, some noise.

``generate(n, seed)`` always returns the same list for the same arguments:
exceptions of four tenants from a handful of sources, with error names,
source spellings and timestamp formats as varied as real producers send them,
plus heartbeats and duplicates that triage ends early. As a script it writes
JSON lines, one ``RawException`` each, that ``flowkit submit --jsonl`` submits
one run per line::

    python examples/exceptions/sample_data.py 100 > exceptions.jsonl
    flowkit submit examples/exceptions/app.py:pipeline --jsonl exceptions.jsonl --key samples
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from exc_models import RawException

TENANTS: tuple[str, ...] = ("acme", "globex", "initech", "umbrella")
_START = datetime(2024, 5, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class _Template:
    """One family of exceptions: how producers name and describe it."""

    weight: int
    kinds: tuple[str, ...]
    sources: tuple[str, ...]
    messages: tuple[str, ...]


_TEMPLATES: tuple[_Template, ...] = (
    _Template(
        18,
        ("TimeoutError", "ETIMEDOUT", "deadline-exceeded", "504"),
        ("  Billing API ", "checkout-web", "Checkout Web"),
        ("Read timed out after {n} ms", "Upstream inventory did not answer in {n}ms"),
    ),
    _Template(
        12,
        ("ConnectionError", "ECONNREFUSED", "503"),
        ("orders-service", "Orders Service ", "ledger-db"),
        ("Connection refused by 10.0.{n}.7:5432", "Connection reset by peer after {n} bytes"),
    ),
    _Template(
        10,
        ("401", "Unauthorized", "token_expired", "Forbidden"),
        ("auth-gateway", "Auth Gateway", "partner-api"),
        ("Token expired for client {n}", "Signature mismatch on request {n}"),
    ),
    _Template(
        8,
        ("429", "Too Many Requests", "throttled"),
        ("partner-api", "search-service"),
        ("Rate limit of {n} req/min exceeded",),
    ),
    _Template(
        12,
        ("ValidationError", "schema_mismatch", "400"),
        ("ETL.Nightly", "etl.nightly ", "import-csv"),
        ("Field 'amount' is not a number in row {n}", "Unexpected column {n} in header"),
    ),
    _Template(
        8,
        ("null_value", "missing_field", "duplicate_row"),
        ("ETL.Nightly", "warehouse-sync"),
        ("Null customer_id in batch {n}", "Checksum mismatch, file corrupt at offset {n}"),
    ),
    _Template(
        12,
        ("card_declined", "payment_failed", "Insufficient Funds"),
        ("payments-service", "Payments Service"),
        ("Charge of {n} cents declined by issuer", "Capture failed for order {n}"),
    ),
    _Template(
        4,
        ("SegfaultInNativeExtension", "java.lang.OutOfMemoryError"),
        ("report-builder",),
        ("Worker crashed while rendering report {n}",),
    ),
    _Template(
        12,
        ("heartbeat", "Ping", "keepalive"),
        ("monitoring-agent", "Monitoring Agent"),
        ("agent alive, uptime {n}s",),
    ),
)
_WEIGHTS = [t.weight for t in _TEMPLATES]


def _timestamp(rng: random.Random, at: datetime) -> str | int:
    """The same instant in one of the formats producers use."""
    style = rng.randrange(5)
    if style == 0:
        return at.isoformat().replace("+00:00", "Z")
    if style == 1:
        return at.astimezone(timezone(timedelta(hours=2))).isoformat()
    if style == 2:
        return at.replace(tzinfo=None).isoformat(sep=" ")  # naive: read as UTC
    if style == 3:
        return int(at.timestamp())
    return int(at.timestamp() * 1000)


def _attributes(rng: random.Random, kind: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "environment": rng.choice(("production", "production", "staging", "dev")),
        "retry_count": rng.choice((0, 0, 0, 1, 1, 2, 3, "5")),
    }
    if rng.random() < 0.15:
        attrs["customer_impact"] = True
    if kind in ("card_declined", "payment_failed", "Insufficient Funds"):
        attrs["amount_cents"] = rng.choice((1_999, 45_000, 250_000, 1_250_000))
    return attrs


def generate(n: int, seed: int = 7) -> list[RawException]:
    """``n`` sample exceptions, the same ones for the same ``seed``.

    About one in eight is a heartbeat and one in twenty-five a duplicate of an
    earlier exception of the same tenant; triage stops both early.
    """
    rng = random.Random(seed)
    out: list[RawException] = []
    seen: dict[str, list[str]] = {t: [] for t in TENANTS}
    for i in range(n):
        tenant = rng.choice(TENANTS)
        template = rng.choices(_TEMPLATES, weights=_WEIGHTS)[0]
        kind = rng.choice(template.kinds)
        at = _START + timedelta(seconds=37 * i + rng.randrange(30))
        attributes = _attributes(rng, kind)
        exception_id = f"exc-{seed}-{i:06d}"
        if seen[tenant] and rng.random() < 0.04:
            attributes["duplicate_of"] = rng.choice(seen[tenant])
        seen[tenant].append(exception_id)
        out.append(
            RawException(
                tenant_id=tenant,
                exception_id=exception_id,
                source=rng.choice(template.sources),
                kind=kind,
                message=rng.choice(template.messages).format(n=rng.randrange(1, 100_000)),
                occurred_at=_timestamp(rng, at),
                attributes=attributes,
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Write ``N`` sample exceptions to stdout as JSON lines."""
    parser = argparse.ArgumentParser(description="Write N sample exceptions as JSON lines.")
    parser.add_argument("count", type=int, metavar="N", help="how many exceptions")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args(argv)
    for exc in generate(args.count, seed=args.seed):
        sys.stdout.write(exc.model_dump_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
