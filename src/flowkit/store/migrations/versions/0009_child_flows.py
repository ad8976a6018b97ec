"""Child flows: a run started by a step of another run, and the step waiting for it.

``flowkit_runs.parent_run_id`` and ``flowkit_runs.parent_step_id`` name the run
and the step (a ``Workflow.call`` step) that started a child run; both are NULL
for every other run. Each has an index: a run's children are listed by its id
(``flowkit runs list --parent``), and a finished child finds its waiting step.

Revision ID: 0009
Revises: 0008
Create Date: 2027-05-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding them rewrites no row on PostgreSQL or SQLite.
    op.add_column("flowkit_runs", sa.Column("parent_run_id", sa.String(32), nullable=True))
    op.add_column("flowkit_runs", sa.Column("parent_step_id", sa.String(32), nullable=True))
    op.create_index("ix_flowkit_runs_parent_run", "flowkit_runs", ["parent_run_id"])
    op.create_index("ix_flowkit_runs_parent_step", "flowkit_runs", ["parent_step_id"])


def downgrade() -> None:
    op.drop_index("ix_flowkit_runs_parent_step", table_name="flowkit_runs")
    op.drop_index("ix_flowkit_runs_parent_run", table_name="flowkit_runs")
    with op.batch_alter_table("flowkit_runs") as batch:
        batch.drop_column("parent_step_id")
        batch.drop_column("parent_run_id")
