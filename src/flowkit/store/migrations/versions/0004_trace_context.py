"""The trace context of a run (its submit) and of a step's recorded attempt.

Revision ID: 0004
Revises: 0003
Create Date: 2027-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Nullable, no default: adding them rewrites no row on PostgreSQL or SQLite.
    op.add_column("flowkit_runs", sa.Column("trace_context", JSONType, nullable=True))
    op.add_column("flowkit_steps", sa.Column("trace_context", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flowkit_steps") as batch:
        batch.drop_column("trace_context")
    with op.batch_alter_table("flowkit_runs") as batch:
        batch.drop_column("trace_context")
