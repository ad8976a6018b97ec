"""Quickstart: process every lender's document, then match every loan application.

::

    python examples/lending/run.py                      # 40 lenders, 10 applications
    python examples/lending/run.py --lenders 200 --applications 50 -v

It creates the example's tables, seeds them with :mod:`sample_data` (the
documents go to ``$TMPDIR/flowkit-lending-documents``), emits ``lender:document:uploaded``
for every lender and waits for those runs, then emits
``loan:application:uploaded`` for every application and waits, and prints a
summary with the best lenders of a few applications.

With no configuration everything runs in this process: the memory broker with
worker threads, and the SQLite file ``flowkit.db`` in the current directory.
With ``FLOWKIT_BROKER_URL=amqp://...`` and ``FLOWKIT_DATABASE_URL=postgresql://...``
it only seeds, emits and waits, and ``flowkit worker`` processes do the work.
Exits 0 when every run succeeded, 1 when one failed or was left unfinished,
2 on a configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import lend_db
import sqlalchemy as sa
from app import app
from lend_lenders import llm_configured
from lend_models import LenderProcessed, Ranking
from sample_data import DOCUMENTS, Seeded, seed

import flowkit

#: the logger of the extraction step's ``ctx.logger``
EXTRACT_LOGGER = "flowkit.step.lender-processing.extract_criteria"


class OncePerMessage(logging.Filter):
    """Let each distinct message through once (the rules fallback warns for every lender)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage().split("] ", 1)[-1]  # without the [run_id=... step=...] tags
        with self._lock:
            new = text not in self._seen
            self._seen.add(text)
        return new


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: how many lenders and applications, how long to wait."""
    parser = argparse.ArgumentParser(
        description="Seed sample lenders and loan applications, run the lender-processing "
        "and loan-matching workflows on them, and print a summary."
    )
    parser.add_argument("--lenders", type=int, default=40, help="lenders to seed (40)")
    parser.add_argument("--applications", type=int, default=10, help="applications (10)")
    parser.add_argument(
        "--documents",
        type=Path,
        default=DOCUMENTS,
        help=f"folder for the generated lender documents ({DOCUMENTS})",
    )
    parser.add_argument("--show", type=int, default=2, help="applications to detail (2)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for each phase (300)"
    )
    parser.add_argument("--seed", type=int, default=7, help="sample data seed (7)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    args = parser.parse_args(argv)
    if args.lenders < 1 or args.applications < 1:
        parser.error("--lenders and --applications must be at least 1")
    return args


def emit_all(event: str, field: str, ids: list[int], batch: str) -> list[flowkit.Run]:
    """Emit ``event`` once per id; run keys ``<batch>:<event>:<id>``."""
    return [app.emit(event, {field: i}, key=f"{batch}:{event}:{i}")[0] for i in ids]


def collect(runs: list[flowkit.Run], timeout: float) -> tuple[list[Any], list[str]]:
    """Wait for the runs (``timeout`` seconds in all): their results, and the errors."""
    deadline = time.monotonic() + timeout
    results, errors = [], []
    for run in runs:
        try:
            results.append(run.result(timeout=max(0.0, deadline - time.monotonic())))
        except flowkit.ResultTimeout:
            errors.append(f"{run.flow} run {run.id} unfinished (raise --timeout, or start workers)")
        except flowkit.RunError as exc:  # RunFailed, or cancelled/timed out
            errors.append(str(exc))
    return results, errors


def _counts(counter: Counter[Any]) -> str:
    return "  ".join(f"{k} {v}" for k, v in counter.most_common()) or "-"


def print_lenders(processed: list[LenderProcessed], seeded: Seeded) -> None:
    """Lines about the lender-processing phase."""
    n = len(seeded.lender_ids)
    status = Counter(p.status for p in processed)
    methods = Counter(p.method for p in processed)
    agree = sum(p.criteria == seeded.criteria[p.lender_id] for p in processed)
    print(f"  lenders processed    {len(processed):4d}/{n}  ({_counts(status)})")
    hint = "" if seeded.sources["pdf"] else "  (pip install pypdf to include PDF documents)"
    print(f"  documents            {_counts(seeded.sources)}{hint}")
    why = "" if llm_configured() else "  (no OPENAI_API_KEY or OPENAI_BASE_URL: regex rules)"
    print(f"  extraction           {_counts(methods)}{why}")
    print(f"  criteria check       {agree:4d}/{len(processed)} agree with the generated criteria")


def print_matching(rankings: list[Ranking], n_apps: int, show: int) -> None:
    """Lines about the matching phase, and the best lenders of the first ``show`` applications."""
    eligible = sorted(r.eligible for r in rankings) or [0]
    print(
        f"  applications matched {len(rankings):4d}/{n_apps}  (eligible lenders per application: "
        f"min {eligible[0]}, median {eligible[len(eligible) // 2]}, max {eligible[-1]})"
    )
    shown = sorted(rankings, key=lambda r: r.application_id)[:show]
    apps = lend_db.loan_applications
    with lend_db.engine(app).connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                sa.select(apps).where(apps.c.id.in_([r.application_id for r in shown]))
            )
        }
    for ranking in shown:
        a = rows[ranking.application_id]
        print(
            f"\n  application {a.id}: {a.business_name} ({a.industry}, {a.state}), credit "
            f"{a.credit_score}, ${a.requested_amount:,.0f} requested, "
            f"{ranking.eligible} of {ranking.lenders_considered} lenders eligible"
        )
        for lender in ranking.ranked[:3]:
            print(f"    {lender.rank}. {lender.lender_name:<28} score {lender.score:5.1f}")
            print(f"       {'; '.join(lender.reasons)}")
        if ranking.declined:
            # Sorted here: PostgreSQL's JSONB does not keep the stored dict's key order.
            declined = sorted(ranking.declined.items(), key=lambda kv: (-kv[1], kv[0]))
            print(f"    declined by: {', '.join(f'{k} {v}' for k, v in declined)}")


def main(argv: list[str] | None = None) -> int:
    """Seed, process the lenders, match the applications, print the summary; the exit code."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger(EXTRACT_LOGGER).addFilter(OncePerMessage())
    batch = datetime.now().strftime("b%Y%m%d-%H%M%S-%f")[:-3]
    started = time.monotonic()
    try:
        lend_db.create_tables(app)
        seeded = seed(
            args.lenders, args.applications, documents=args.documents, seed=args.seed, app=app
        )
        if not app.settings.embedded:
            print("waiting for `flowkit worker` processes to run the workflows...", file=sys.stderr)
        runs = emit_all("lender:document:uploaded", "lender_id", seeded.lender_ids, batch)
        processed, lender_errors = collect(runs, args.timeout)
        lenders_done = time.monotonic()
        runs = emit_all(
            "loan:application:uploaded", "application_id", seeded.application_ids, batch
        )
        results, match_errors = collect(runs, args.timeout)
        matching_done = time.monotonic()
        rankings = [Ranking.model_validate(r) for r in results]  # a Stop's output is a dict
        print(f"lending on flowkit, batch {batch}: {app.describe()}")
        print_lenders(processed, seeded)
        print_matching(rankings, len(seeded.application_ids), args.show)
    except (flowkit.FlowkitError, sa.exc.SQLAlchemyError) as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    finally:
        app.close()
    errors = lender_errors + match_errors
    print(f"\n  failed or unfinished {len(errors):4d}")
    for line in errors[:5]:
        print(f"    {line}")
    print(
        f"  elapsed              {matching_done - started:.2f}s (seeding and lender documents "
        f"{lenders_done - started:.2f}s, matching {matching_done - lenders_done:.2f}s)"
    )
    print("look at them:  flowkit runs list --flow loan-matching   (flowkit runs show RUN_ID)")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
