"""The recovery sweep's evidence: re-publishes on steps, free threads on workers.

Revision ID: 0005
Revises: 0004
Create Date: 2027-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Nullable, no default: adding them rewrites no row on PostgreSQL or SQLite.
    op.add_column("flowkit_steps", sa.Column("republished_at", Timestamp, nullable=True))
    op.add_column("flowkit_steps", sa.Column("republishes", sa.Integer, nullable=True))
    op.add_column("flowkit_workers", sa.Column("free_since", Timestamp, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flowkit_workers") as batch:
        batch.drop_column("free_since")
    with op.batch_alter_table("flowkit_steps") as batch:
        batch.drop_column("republishes")
        batch.drop_column("republished_at")
