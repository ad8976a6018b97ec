"""Stand-ins for the external services the workflow calls: a flaky budget service and a ledger.

Both keep their state in a small SQLite file, ``flowkit-approvals-services.db`` in
the system's temporary folder (``$APPROVALS_SERVICES_DB`` to move it), so that the
simulation behaves the same in every worker process of one machine and writes
nothing into your checkout.

The budget service is deterministically flaky: the first request for an
idempotency key is recorded, then answered with a timeout, the way a real
service sometimes does the work and loses the response. A retry with the same
key gets the recorded answer instead of a second reservation. The ledger books
an entry once per idempotency key, however often it is asked.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass

#: Each department's monthly expense budget, in euro cents.
BUDGETS_EUR_CENTS: dict[str, int] = {
    "sales": 2_500_000,
    "engineering": 4_000_000,
    "marketing": 1_500_000,
    "support": 800_000,
    "finance": 600_000,
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_requests (
    idempotency_key TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL,
    department      TEXT NOT NULL,
    amount_cents    INTEGER NOT NULL,
    calls           INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    idempotency_key TEXT PRIMARY KEY,
    entry_id        TEXT NOT NULL,
    expense_id      TEXT NOT NULL,
    amount_cents    INTEGER NOT NULL,
    approver        TEXT NOT NULL
);
"""


class ServiceUnavailable(Exception):
    """The service did not answer in time; the request may have been processed."""


@dataclass(frozen=True)
class BudgetReply:
    """The budget service's answer for one expense."""

    request_id: str
    left_eur_cents: int
    within_budget: bool


def _path() -> str:
    default = os.path.join(tempfile.gettempdir(), "flowkit-approvals-services.db")
    return os.environ.get("APPROVALS_SERVICES_DB", default)


@contextmanager
def _transaction() -> Iterator[sqlite3.Connection]:
    # autocommit mode plus an explicit BEGIN IMMEDIATE: one writer at a time, over
    # every thread and process sharing the file, waiting up to 30 s for the lock.
    with closing(sqlite3.connect(_path(), timeout=30, isolation_level=None)) as conn:
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _derived_id(prefix: str, key: str) -> str:
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:16]


def reserve_budget(idempotency_key: str, department: str, amount_eur_cents: int) -> BudgetReply:
    """Ask the budget service to reserve ``amount_eur_cents`` of ``department``'s budget.

    Raises:
        ServiceUnavailable: on the first request for ``idempotency_key`` (which
            is nevertheless recorded, as a slow service would).
        KeyError: the department has no budget.
    """
    budget = BUDGETS_EUR_CENTS[department]
    request_id = _derived_id("bud_", idempotency_key)
    with _transaction() as conn:
        row = conn.execute(
            "SELECT calls FROM budget_requests WHERE idempotency_key = ?", (idempotency_key,)
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO budget_requests VALUES (?, ?, ?, ?, 1)",
                (idempotency_key, request_id, department, amount_eur_cents),
            )
            first_call = True
        else:
            conn.execute(
                "UPDATE budget_requests SET calls = calls + 1 WHERE idempotency_key = ?",
                (idempotency_key,),
            )
            first_call = False
    if first_call:  # committed above: the "lost response" of a request that was processed
        raise ServiceUnavailable(f"budget service timed out on request {request_id}")
    left = budget - amount_eur_cents
    return BudgetReply(request_id=request_id, left_eur_cents=left, within_budget=left >= 0)


def book_expense(
    idempotency_key: str, expense_id: str, amount_eur_cents: int, approver: str
) -> str:
    """Book an approved expense in the ledger, once per idempotency key; the entry's id."""
    entry_id = _derived_id("led_", idempotency_key)
    with _transaction() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO ledger VALUES (?, ?, ?, ?, ?)",
            (idempotency_key, entry_id, expense_id, amount_eur_cents, approver),
        )
    return entry_id


def budget_calls(keys: list[str]) -> tuple[int, int]:
    """``(requests, calls)`` the budget service received for these idempotency keys."""
    if not keys:
        return 0, 0
    marks = ",".join("?" * len(keys))
    with _transaction() as conn:
        row = conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(calls), 0) FROM budget_requests "
            f"WHERE idempotency_key IN ({marks})",
            keys,
        ).fetchone()
    return int(row[0]), int(row[1])


def ledger_entries(keys: list[str]) -> int:
    """How many ledger entries these idempotency keys booked (at most one each)."""
    if not keys:
        return 0
    marks = ",".join("?" * len(keys))
    with _transaction() as conn:
        row = conn.execute(
            f"SELECT COUNT(*) FROM ledger WHERE idempotency_key IN ({marks})", keys
        ).fetchone()
    return int(row[0])
