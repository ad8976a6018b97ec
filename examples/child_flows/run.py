"""Run loan matching with a child run per lender, then show the parent and its children.

::

    python examples/child_flows/run.py

With no configuration everything runs in this process (the memory broker and
``flowkit.db`` in the current directory). Exits 0 when the ranking is as expected.
"""

from __future__ import annotations

import sys

from app import LoanApplication, app, matching


def main() -> int:
    application = LoanApplication(
        applicant="acme", amount=12_000, lenders=["north-bank", "offline-bank", "river-credit"]
    )
    with app:
        run = matching.submit(application)
        ranking = run.result(timeout=60)
        print(f"run {run.id}: best {ranking.best}, failed {ranking.failed}")
        for child in app.store.calls.children(run.id):
            print(f"  child {child['id']} {child['flow']} item {child['item']}: {child['status']}")
    ok = sorted(ranking.best) == ["north-bank", "river-credit"] and ranking.failed == [
        "offline-bank"
    ]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
