"""The attempt log: every attempt of a step that did not succeed.

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "flowkit_attempts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("step_id", sa.String(32), nullable=False),
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("flowkit_runs.id", ondelete="CASCADE", name="fk_flowkit_attempts_run"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.String(32), nullable=True),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", JSONType, nullable=True),
    )
    op.create_index("ix_flowkit_attempts_run", "flowkit_attempts", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_flowkit_attempts_run", table_name="flowkit_attempts")
    op.drop_table("flowkit_attempts")
