"""Flow fingerprints and stranded runs: what a run started under, and why it cannot go on.

``flowkit_runs.fingerprint`` is the hash of the flow definition a run started
under (:mod:`flowkit.fingerprints`); ``flowkit_runs.stranded`` says why the
deployed definition cannot go on with a live run (``step `review` no longer
exists``), found through a partial index that only the stranded runs enter.
Runs from before this revision have no fingerprint: a worker checks their live
steps against its definition once, when it starts.

Revision ID: 0008
Revises: 0007
Create Date: 2027-04-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

STRANDED = sa.text("stranded IS NOT NULL")


def upgrade() -> None:
    # Nullable, no default: adding them rewrites no row on PostgreSQL or SQLite.
    op.add_column("flowkit_runs", sa.Column("fingerprint", sa.String(16), nullable=True))
    op.add_column("flowkit_runs", sa.Column("stranded", sa.Text, nullable=True))
    op.create_index(
        "ix_flowkit_runs_stranded",
        "flowkit_runs",
        ["created_at"],
        postgresql_where=STRANDED,
        sqlite_where=STRANDED,
    )


def downgrade() -> None:
    op.drop_index("ix_flowkit_runs_stranded", table_name="flowkit_runs")
    with op.batch_alter_table("flowkit_runs") as batch:
        batch.drop_column("stranded")
        batch.drop_column("fingerprint")
