"""The store's guarded transitions and migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import flowkit
from flowkit._ids import new_id
from flowkit.store import NewStep, Outcome, Recorded, Store
from flowkit.store.migrate import check_schema, current_revision, ensure_schema, upgrade
from flowkit.store.schema import SCHEMA_REVISION, metadata


def _run(store: Store, key: str | None = None, n: int = 1) -> tuple[str, list[NewStep]]:
    steps = [NewStep(id=new_id(), name=f"s{i}", queue="q", input={"i": i}) for i in range(n)]
    created = store.runs.create(run_id=new_id(), flow="f", key=key, input={"x": 1}, first=steps)
    return created.run_id, steps


def test_migrations_create_exactly_the_declared_schema(store: Store) -> None:
    with store.db.sql.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": "flowkit_alembic_version"})
        diff = compare_metadata(ctx, metadata)
    assert diff == []
    assert current_revision(store.db.sql) == SCHEMA_REVISION


def test_upgrade_is_idempotent(store: Store) -> None:
    assert upgrade(store.db.sql) == (SCHEMA_REVISION, SCHEMA_REVISION)
    ensure_schema(store.db.sql)
    check_schema(store.db.sql)


def test_a_newer_schema_is_refused(store: Store) -> None:
    with store.db.sql.begin() as conn:
        conn.execute(sa.text("UPDATE flowkit_alembic_version SET version_num = '9999'"))
    with pytest.raises(flowkit.SchemaVersionError, match="newer than this flowkit"):
        ensure_schema(store.db.sql)
    with pytest.raises(flowkit.SchemaVersionError, match="newer than this flowkit"):
        check_schema(store.db.sql)


def test_a_missing_schema_is_reported_not_created(database_url: str) -> None:
    s = Store(database_url, pool_size=1)
    try:
        with pytest.raises(flowkit.SchemaVersionError, match="flowkit db upgrade"):
            s.check_schema()
    finally:
        s.dispose()


def test_one_run_per_key(store: Store) -> None:
    run_id, _ = _run(store, key="k")
    again = store.runs.create(run_id=new_id(), flow="f", key="k", input={}, first=[])
    assert not again.created and again.run_id == run_id
    other_flow = store.runs.create(run_id=new_id(), flow="g", key="k", input={}, first=[])
    assert other_flow.created


def test_concurrent_submits_with_one_key_make_one_run(store: Store) -> None:
    ids: list[str] = []
    barrier = threading.Barrier(4)

    def submit() -> None:
        barrier.wait()
        ids.append(_run(store, key="race")[0])

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert store.count_runs() == {"pending": 1}


def test_claim_is_exclusive_but_a_redelivery_of_the_same_message_may_resume(
    store: Store,
) -> None:
    run_id, (step,) = _run(store)
    first = store.runs.claim(step.id, "m1", lease_ms=1000, starts_run=True)
    assert first is not None and first.attempts == 1 and first.input == {"i": 0}
    assert store.runs.claim(step.id, "m2", lease_ms=1000, starts_run=True) is None
    again = store.runs.claim(step.id, "m1", lease_ms=1000, starts_run=True)
    assert again is not None and again.attempts == 2
    assert store.get_run(run_id).status is flowkit.RunStatus.RUNNING  # type: ignore[union-attr]


def test_completion_is_recorded_once_and_queues_successors_once(store: Store) -> None:
    run_id, (step,) = _run(store)
    store.runs.claim(step.id, "m1", lease_ms=1000, starts_run=True)
    nxt = NewStep(id=new_id(), name="next", queue="q", input={"y": 2})
    assert store.runs.complete(
        step.id, "m1", run_id, Outcome(output={"y": 2}, inserts=[nxt])
    ) == Recorded([nxt])
    dup = NewStep(id=new_id(), name="next", queue="q", input={"y": 2})
    assert None is store.runs.complete(
        step.id, "m2", run_id, Outcome(output={"y": 3}, inserts=[dup])
    )
    steps = store.get_steps(run_id)
    assert [(s.name, s.status.value) for s in steps] == [("s0", "succeeded"), ("next", "queued")]
    assert steps[0].output == {"y": 2}
    assert store.get_run(run_id).status is flowkit.RunStatus.RUNNING  # type: ignore[union-attr]
    row = store.step_row(step.id)
    assert row is not None
    assert (row.status, row.claimed_by, row.run_id, row.name) == ("succeeded", "m1", run_id, "s0")
    assert store.runs.queued_steps(run_id, ["next"]) == [(nxt.id, "next", "q")]


def test_failure_fails_step_and_run_once(store: Store) -> None:
    run_id, (step,) = _run(store)
    store.runs.claim(step.id, "m1", lease_ms=1000, starts_run=True)
    err = {"type": "ValueError", "message": "no", "step": "s0"}
    assert store.runs.fail(step.id, run_id, err)
    assert not store.runs.fail(step.id, run_id, err)
    run = store.get_run(run_id)
    assert run is not None and run.status is flowkit.RunStatus.FAILED and run.error == err
    assert store.runs.claim(step.id, "m1", lease_ms=1000, starts_run=False) is None


def test_recovery_finds_old_queued_and_expired_running_steps(store: Store) -> None:
    _, (queued,) = _run(store)
    _, (running,) = _run(store)
    _, (fresh,) = _run(store)
    store.runs.claim(running.id, "m1", lease_ms=0, starts_run=True)
    store.runs.claim(fresh.id, "m2", lease_ms=60_000, starts_run=True)
    due = {d.id for d in store.runs.due_steps(older_than=0)}
    assert due == {queued.id, running.id}
    assert store.step_row(running.id).status == "queued"  # type: ignore[union-attr]
    assert {d.id for d in store.runs.due_steps(older_than=0, all_running=True)} >= {fresh.id}
    assert store.runs.due_steps(older_than=3600) == []


def test_listing_filters_by_flow_and_status(store: Store) -> None:
    for _ in range(3):
        _run(store)
    rid, (step,) = _run(store)
    store.runs.claim(step.id, "m", lease_ms=1000, starts_run=True)
    assert len(store.list_runs()) == 4
    assert [r.id for r in store.list_runs(status="running")] == [rid]
    assert len(store.list_runs(flow="f", limit=2)) == 2
    assert store.list_runs(flow="nope") == []
    assert store.count_runs(flow="f") == {"pending": 3, "running": 1}
