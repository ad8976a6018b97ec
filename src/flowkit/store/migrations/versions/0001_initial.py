"""Runs, steps, signals, rate limits, dead letters and the LLM response cache.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "flowkit_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("flow", sa.String(100), nullable=False),
        sa.Column("key", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", JSONType, nullable=True),
        sa.Column("output", JSONType, nullable=True),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("stop_reason", sa.String(500), nullable=True),
        sa.Column("deadline_at", Timestamp, nullable=True),
        sa.Column("priority", sa.Integer, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.UniqueConstraint("flow", "key", name="uq_flowkit_runs_flow_key"),
    )
    op.create_index("ix_flowkit_runs_flow_created", "flowkit_runs", ["flow", "created_at"])
    op.create_index("ix_flowkit_runs_status_created", "flowkit_runs", ["status", "created_at"])
    op.create_index("ix_flowkit_runs_created", "flowkit_runs", ["created_at"])
    op.create_table(
        "flowkit_steps",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("flowkit_runs.id", ondelete="CASCADE", name="fk_flowkit_steps_run"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("item", sa.Integer, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("input", JSONType, nullable=True),
        sa.Column("output", JSONType, nullable=True),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("scheduled_at", Timestamp, nullable=True),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("lease_until", Timestamp, nullable=True),
        sa.Column("pending", sa.Integer, nullable=True),
        sa.Column("usage", JSONType, nullable=True),
        sa.Column("limit_key", sa.String(200), nullable=True),
    )
    op.create_index("ix_flowkit_steps_run", "flowkit_steps", ["run_id", "name"])
    op.create_index(
        "ix_flowkit_steps_status_scheduled", "flowkit_steps", ["status", "scheduled_at"]
    )
    op.create_index("ix_flowkit_steps_limit", "flowkit_steps", ["limit_key", "status"])
    op.create_index("ix_flowkit_steps_queue_status", "flowkit_steps", ["queue", "status"])

    op.create_table(
        "flowkit_llm_cache",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("response", JSONType, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", Timestamp, nullable=False),
    )

    op.create_table(
        "flowkit_signals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("flowkit_runs.id", ondelete="CASCADE", name="fk_flowkit_signals_run"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("payload", JSONType, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.UniqueConstraint("run_id", "name", name="uq_flowkit_signals_run_name"),
    )

    op.create_table(
        "flowkit_rate_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("at", Timestamp, nullable=False),
    )
    op.create_index("ix_flowkit_rate_log_key_at", "flowkit_rate_log", ["key", "at"])
    op.create_table(
        "flowkit_dead_letters",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("queue", sa.String(200), nullable=True),
        sa.Column("actor", sa.String(300), nullable=True),
        sa.Column("message_id", sa.String(64), nullable=True),
        sa.Column("body", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("step_id", sa.String(32), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_flowkit_dead_letters_created", "flowkit_dead_letters", ["created_at"])


def downgrade() -> None:
    op.drop_table("flowkit_dead_letters")
    op.drop_table("flowkit_rate_log")
    op.drop_table("flowkit_signals")
    op.drop_table("flowkit_llm_cache")
    op.drop_table("flowkit_steps")
    op.drop_table("flowkit_runs")
