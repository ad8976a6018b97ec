"""A redeploy on the embedded default (SQLite, in-process broker): see docs/deploys.md.

Three runs wait for their approval under v1; v2 is deployed (its worker starts): the
three are stranded, with the reason; `retry --from approve` moves them onto v2, and
their approvals complete them. Run it from any directory: ``python run.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import expenses_v1 as v1
import expenses_v2 as v2

from flowkit import RunStatus
from flowkit.runtime.stranded import check_flow
from flowkit.testing import wait_for_status

DB = f"sqlite:///{Path.cwd() / 'redeploy.db'}"


def main() -> None:
    # v1 is live: three expenses wait for an approval.
    v1.app.configure(database_url=DB, broker_url="memory://")
    runs = [v1.expenses.submit({"id": i, "amount": 100 * i}) for i in (1, 2, 3)]
    for run in runs:
        wait_for_status(run, RunStatus.WAITING)
    v1.app.close()

    # Before the deploy: what would v2 strand? (`flowkit flows diff expenses_v2.py:app`)
    v2.app.configure(database_url=DB, broker_url="memory://", embedded_worker=False)
    diff = check_flow(v2.app.store, v2.expenses.compile(), mark=False)
    print(f"v2 would strand {len(diff.stranded)} run(s): {diff.stranded[0][1]}")

    # The deploy: v2's worker starts and marks them (`flowkit runs list --stranded`).
    v2.app.start_worker()
    for r in v2.app.store.strands.stranded():
        print(f"stranded {r.id}: {r.reason}")

    # Onto v2 from `approve` (`flowkit retry --stranded --from approve`), then approve.
    for run in runs:
        plan = v2.app.retry_preview(run.id, from_step="approve")
        print(f"retry {run.id}: re-runs {', '.join(plan.rerun)}; reuses {', '.join(plan.reused)}")
        v2.app.retry(run.id, from_step="approve")
        v2.app.run(run.id).signal("approval", {"ok": True})
    for run in runs:
        print(v2.app.run(run.id).result(timeout=30))
    v2.app.close()


if __name__ == "__main__":
    main()
