"""The concurrency hand-off: a step over a concurrency limit waits as a row.

``flowkit_steps.waits_for`` names the limit key a queued step waits for a slot of;
the step that frees one hands it to the oldest waiter (``flowkit.store.handoff``),
found through a partial index that only the waiting steps enter.

Revision ID: 0007
Revises: 0006
Create Date: 2027-03-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WAITING = sa.text("waits_for IS NOT NULL")


def upgrade() -> None:
    # Nullable, no default: adding it rewrites no row on PostgreSQL or SQLite.
    op.add_column("flowkit_steps", sa.Column("waits_for", sa.String(220), nullable=True))
    op.create_index(
        "ix_flowkit_steps_waits",
        "flowkit_steps",
        ["waits_for", "created_at"],
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )


def downgrade() -> None:
    op.drop_index("ix_flowkit_steps_waits", table_name="flowkit_steps")
    with op.batch_alter_table("flowkit_steps") as batch:
        batch.drop_column("waits_for")
