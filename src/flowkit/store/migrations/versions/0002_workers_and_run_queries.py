"""Workers and their heartbeats, the step's worker, the run's error type, run-query indexes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("flowkit_runs", sa.Column("error_type", sa.String(100), nullable=True))
    _backfill_error_type()
    op.create_index("ix_flowkit_runs_error_created", "flowkit_runs", ["error_type", "created_at"])
    op.create_index(
        "ix_flowkit_runs_key",
        "flowkit_runs",
        ["key"],
        postgresql_ops={"key": "text_pattern_ops"},
    )
    op.add_column("flowkit_steps", sa.Column("worker_id", sa.String(32), nullable=True))
    op.create_table(
        "flowkit_workers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", JSONType, nullable=True),
        sa.Column("threads", sa.Integer, nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("heartbeat_at", Timestamp, nullable=False),
        sa.Column("stopped_at", Timestamp, nullable=True),
    )
    op.create_index("ix_flowkit_workers_heartbeat", "flowkit_workers", ["heartbeat_at"])


def _backfill_error_type() -> None:
    # Runs that ended with an error before this revision: read the type from
    # the stored error, as finish_run records it from now on.
    if op.get_bind().dialect.name == "postgresql":
        type_of = "substr(error ->> 'type', 1, 100)"
    else:
        type_of = "substr(json_extract(error, '$.type'), 1, 100)"
    op.execute(
        f"UPDATE flowkit_runs SET error_type = {type_of} "
        "WHERE status IN ('failed', 'timed_out') AND error IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_flowkit_workers_heartbeat", table_name="flowkit_workers")
    op.drop_table("flowkit_workers")
    with op.batch_alter_table("flowkit_steps") as batch:
        batch.drop_column("worker_id")
    op.drop_index("ix_flowkit_runs_key", table_name="flowkit_runs")
    op.drop_index("ix_flowkit_runs_error_created", table_name="flowkit_runs")
    with op.batch_alter_table("flowkit_runs") as batch:
        batch.drop_column("error_type")
