"""PostgreSQL tells who listens when a run ends: ``NOTIFY flowkit_run_finished, '<run id>'``.

A trigger on ``flowkit_runs`` fires when a run's status changes to a terminal one,
whichever statement made the change (the one-statement completion, a failure, a
cancel, a deadline, the sweep), so ``Run.wait`` in any process is woken without a
line of code on the hot path (see ``flowkit.store.notify``). SQLite has no
notifications: there this revision changes nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2027-03-15
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen here, as a migration must be: the channel flowkit.store.notify listens on,
# and the terminal run statuses of flowkit.status.
CHANNEL = "flowkit_run_finished"
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")

FUNCTION = f"""
CREATE OR REPLACE FUNCTION flowkit_notify_run_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', NEW.id);
    RETURN NULL;
END
$$
"""

TRIGGER = f"""
CREATE TRIGGER flowkit_run_finished
AFTER UPDATE OF status ON flowkit_runs
FOR EACH ROW
WHEN (NEW.status IN ({", ".join(f"'{s}'" for s in TERMINAL)})
      AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION flowkit_notify_run_finished()
"""


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    op.execute(FUNCTION)
    op.execute(TRIGGER)


def downgrade() -> None:
    if not _postgresql():
        return
    op.execute("DROP TRIGGER IF EXISTS flowkit_run_finished ON flowkit_runs")
    op.execute("DROP FUNCTION IF EXISTS flowkit_notify_run_finished()")
