"""flowkit's tables and indexes: the one place the schema is declared.

The Alembic migrations in :mod:`flowkit.store.migrations` create exactly this
schema; a test compares the two.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = [
    "SCHEMA_REVISION",
    "attempts",
    "dead_letters",
    "llm_cache",
    "metadata",
    "rate_log",
    "runs",
    "signals",
    "steps",
    "workers",
]

#: The Alembic revision this version of flowkit expects at head.
SCHEMA_REVISION = "0009"

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)

metadata = sa.MetaData()

runs = sa.Table(
    "flowkit_runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("flow", sa.String(100), nullable=False),
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("input", JSONType, nullable=True),
    sa.Column("output", JSONType, nullable=True),
    sa.Column("error", JSONType, nullable=True),
    # Set when a step ended the run early with flowkit.Stop.
    sa.Column("stop_reason", sa.String(500), nullable=True),
    # The run's deadline (flow timeout=): past it the run is timed_out.
    sa.Column("deadline_at", Timestamp, nullable=True),
    # Broker priority of the run's messages (submit(priority=...)).
    sa.Column("priority", sa.Integer, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("started_at", Timestamp, nullable=True),
    sa.Column("finished_at", Timestamp, nullable=True),
    # error["type"] of a run that ended failed or timed_out, for filtering by it.
    sa.Column("error_type", sa.String(100), nullable=True),
    # The trace context (W3C traceparent) of the run's submit, so a signal, a timer,
    # the recovery sweep or a redrive in another process continues the same trace.
    sa.Column("trace_context", JSONType, nullable=True),
    # The fingerprint of the flow definition the run started under (flowkit.fingerprints),
    # moved on to the deployed one by `flowkit retry` (docs/deploys.md).
    sa.Column("fingerprint", sa.String(16), nullable=True),
    # Why the deployed definition cannot go on with the live run (docs/deploys.md);
    # NULL for every run that is not stranded. Cleared by `flowkit retry --from`.
    sa.Column("stranded", sa.Text, nullable=True),
    # A child run (Workflow.call, docs/child-flows.md): the run and the step waiting for it.
    sa.Column("parent_run_id", sa.String(32), nullable=True),
    sa.Column("parent_step_id", sa.String(32), nullable=True),
    sa.UniqueConstraint("flow", "key", name="uq_flowkit_runs_flow_key"),
    sa.Index("ix_flowkit_runs_parent_run", "parent_run_id"),
    sa.Index("ix_flowkit_runs_parent_step", "parent_step_id"),
    sa.Index("ix_flowkit_runs_flow_created", "flow", "created_at"),
    sa.Index("ix_flowkit_runs_status_created", "status", "created_at"),
    sa.Index("ix_flowkit_runs_created", "created_at"),
    sa.Index("ix_flowkit_runs_error_created", "error_type", "created_at"),
    # Key-prefix search (LIKE 'p%'): text_pattern_ops compares bytes, so
    # PostgreSQL can use the index whatever the database's collation.
    sa.Index("ix_flowkit_runs_key", "key", postgresql_ops={"key": "text_pattern_ops"}),
    # The stranded runs; partial, so the others cost no entry.
    sa.Index(
        "ix_flowkit_runs_stranded",
        "created_at",
        postgresql_where=sa.text("stranded IS NOT NULL"),
        sqlite_where=sa.text("stranded IS NOT NULL"),
    ),
)

steps = sa.Table(
    "flowkit_steps",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "run_id",
        sa.String(32),
        sa.ForeignKey("flowkit_runs.id", ondelete="CASCADE", name="fk_flowkit_steps_run"),
        nullable=False,
    ),
    sa.Column("name", sa.String(100), nullable=False),
    # Position of a fanned-out item within its step; NULL for an ordinary step.
    sa.Column("item", sa.Integer, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("queue", sa.String(200), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("input", JSONType, nullable=True),
    sa.Column("output", JSONType, nullable=True),
    sa.Column("error", JSONType, nullable=True),
    # Id of the broker message that claimed (then completed) the step: a
    # redelivery of that same message may resume it, any other copy is a duplicate.
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    # Not before: a retry's or a timer's due time; the recovery sweep respects it.
    sa.Column("scheduled_at", Timestamp, nullable=True),
    sa.Column("started_at", Timestamp, nullable=True),
    sa.Column("finished_at", Timestamp, nullable=True),
    # A running step whose lease passed is presumed dead and may be re-published.
    sa.Column("lease_until", Timestamp, nullable=True),
    # A waiting join: how many parent completions it still waits for.
    sa.Column("pending", sa.Integer, nullable=True),
    # LLM tokens and cost spent by the step (flowkit.llm), when any.
    sa.Column("usage", JSONType, nullable=True),
    # The concurrency-limit key the step holds while running (per tenant, ...).
    sa.Column("limit_key", sa.String(200), nullable=True),
    # The worker (flowkit_workers.id) that holds, or last held, the step.
    sa.Column("worker_id", sa.String(32), nullable=True),
    # The trace context of the attempt that recorded the outcome: a join's span links to it.
    sa.Column("trace_context", JSONType, nullable=True),
    # When the recovery sweep last re-published the step's message, and how many
    # times since it was queued (its publish lease grows with each).
    sa.Column("republished_at", Timestamp, nullable=True),
    sa.Column("republishes", sa.Integer, nullable=True),
    # A queued step refused by a concurrency limit waits for a slot of this key
    # (``conc:<limit key>`` or ``queue:<queue>``): the step that frees one hands it over.
    sa.Column("waits_for", sa.String(220), nullable=True),
    sa.Index("ix_flowkit_steps_run", "run_id", "name"),
    sa.Index("ix_flowkit_steps_status_scheduled", "status", "scheduled_at"),
    sa.Index("ix_flowkit_steps_limit", "limit_key", "status"),
    sa.Index("ix_flowkit_steps_queue_status", "queue", "status"),
    # The oldest waiter of a key; partial, so the steps that never wait cost no entry.
    sa.Index(
        "ix_flowkit_steps_waits",
        "waits_for",
        "created_at",
        postgresql_where=sa.text("waits_for IS NOT NULL"),
        sqlite_where=sa.text("waits_for IS NOT NULL"),
    ),
)

llm_cache = sa.Table(
    "flowkit_llm_cache",
    metadata,
    # sha256 of (model, messages, schema): the same question asked again.
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("response", JSONType, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", Timestamp, nullable=False),
)

signals = sa.Table(
    "flowkit_signals",
    metadata,
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
    # One signal of a name per run: a second one is refused, an early one kept.
    sa.UniqueConstraint("run_id", "name", name="uq_flowkit_signals_run_name"),
)

rate_log = sa.Table(
    "flowkit_rate_log",
    metadata,
    # One row per step start under a rate limit: the sliding window's log.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Index("ix_flowkit_rate_log_key_at", "key", "at"),
)

dead_letters = sa.Table(
    "flowkit_dead_letters",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("queue", sa.String(200), nullable=True),
    sa.Column("actor", sa.String(300), nullable=True),
    sa.Column("message_id", sa.String(64), nullable=True),
    # The message as received (text, or base64 when it was not UTF-8).
    sa.Column("body", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(32), nullable=True),
    sa.Column("step_id", sa.String(32), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_flowkit_dead_letters_created", "created_at"),
)

workers = sa.Table(
    "flowkit_workers",
    metadata,
    # One row per worker process (App.start_worker), kept alive by heartbeats.
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    # The queues it serves; NULL: every queue of its App.
    sa.Column("queues", JSONType, nullable=True),
    sa.Column("threads", sa.Integer, nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("heartbeat_at", Timestamp, nullable=False),
    sa.Column("stopped_at", Timestamp, nullable=True),
    # As of heartbeat_at, a worker thread has been free without a break since then
    # (NULL: every thread busy): the evidence that its queues hold no ready message.
    sa.Column("free_since", Timestamp, nullable=True),
    sa.Index("ix_flowkit_workers_heartbeat", "heartbeat_at"),
)

attempts = sa.Table(
    "flowkit_attempts",
    metadata,
    # One row per attempt that did not succeed (retried, failed, or lost with its
    # worker); the step row itself holds its last attempt.
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
    # 'retried', 'failed' or 'lost'
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error", JSONType, nullable=True),
    sa.Index("ix_flowkit_attempts_run", "run_id"),
)
