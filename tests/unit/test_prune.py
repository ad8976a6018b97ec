"""Retention, on SQLite and PostgreSQL: finished runs older than the cutoff go with every
row keyed by their id; live runs, recent runs and filtered-out runs stay.

The rows are written straight into the tables (a run, its steps, a signal, an attempt)
with the ages each test needs; the sweep's part runs on an Engine built by hand over
the ``store`` fixture and a :class:`MemoryPublisher`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import flowkit
from flowkit._ids import new_id
from flowkit.retention import Retention, parse_statuses, retention_setting
from flowkit.runtime.engine import Engine
from flowkit.runtime.publisher import MemoryPublisher
from flowkit.runtime.sweep import Presence, Sweeper
from flowkit.status import RunStatus
from flowkit.store import Pruned, Store
from flowkit.store.db import utcnow
from flowkit.store.schema import attempts, dead_letters, rate_log, runs, signals, steps, workers
from flowkit.store.sweep import DUTY_LOCK

DAY = timedelta(days=1)
S, F, C, T = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT)


@flowkit.stage(queue="prune.q")
def only(n: int) -> int:
    return n


GRAPH = flowkit.Pipeline("prune-rules", [only]).compile()


def seed(
    store: Store, status: str, ended_ago: timedelta | None, *, flow: str = "f", n_steps: int = 2
) -> str:
    """A run in ``status`` that ended ``ended_ago`` (``None``: not ended), created a day
    before that, with ``n_steps`` steps, a signal and an attempt."""
    now = utcnow()
    ended = None if ended_ago is None else now - ended_ago
    created = (ended or now) - DAY
    run_id = new_id()
    with store.db.transaction() as conn:
        conn.execute(
            runs.insert().values(
                id=run_id, flow=flow, status=status, created_at=created, finished_at=ended
            )
        )
        for i in range(n_steps):
            step_id = new_id()
            conn.execute(
                steps.insert().values(
                    id=step_id,
                    run_id=run_id,
                    name=f"s{i}",
                    status="succeeded" if ended else "queued",
                    queue="prune.q",
                    created_at=created,
                )
            )
        conn.execute(
            signals.insert().values(id=new_id(), run_id=run_id, name="go", created_at=created)
        )
        conn.execute(
            attempts.insert().values(
                id=new_id(), step_id=step_id, run_id=run_id, attempt=1, outcome="retried"
            )
        )
    return run_id


def seed_old_rows(store: Store, age: timedelta) -> None:
    """A dead letter and a rate-log row ``age`` old."""
    when = utcnow() - age
    with store.db.transaction() as conn:
        conn.execute(
            dead_letters.insert().values(id=new_id(), reason="bad", created_at=when, body="x")
        )
        conn.execute(rate_log.insert().values(key="k", at=when))


def left(store: Store) -> set[str]:
    with store.db.transaction() as conn:
        return set(conn.execute(sa.select(runs.c.id)).scalars())


def rows(store: Store, table: sa.Table) -> int:
    with store.db.transaction() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def orphans(store: Store) -> int:
    """Rows of a child table whose run is gone."""
    with store.db.transaction() as conn:
        return sum(
            int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(t)
                    .where(t.c.run_id.not_in(sa.select(runs.c.id)))
                ).scalar_one()
            )
            for t in (steps, signals, attempts)
        )


def test_only_finished_runs_older_than_the_cutoff_go_with_all_their_rows(store: Store) -> None:
    old = [seed(store, s.value, 40 * DAY) for s in (S, F, C, T)]
    recent = seed(store, "succeeded", 2 * DAY)
    live = [seed(store, s, None) for s in ("pending", "running", "waiting")]
    # A live run created long ago, with a stray end time: still never deleted.
    with store.db.transaction() as conn:
        conn.execute(
            runs.update()
            .where(runs.c.id == live[1])
            .values(created_at=utcnow() - 90 * DAY, finished_at=utcnow() - 60 * DAY)
        )
    seed_old_rows(store, 40 * DAY)
    seed_old_rows(store, 1 * DAY)
    done = store.prune.all(before=utcnow() - 30 * DAY)
    assert done == Pruned(runs=4, steps=8, signals=4, attempts=4, dead_letters=1, rate_log=1)
    assert left(store) == {recent, *live}
    assert not left(store) & set(old)
    assert orphans(store) == 0
    assert rows(store, steps) == 8 and rows(store, dead_letters) == 1 and rows(store, rate_log) == 1
    assert store.prune.all(before=utcnow() - 30 * DAY) == Pruned()  # nothing left to do


def test_status_and_flow_filters_leave_the_rest_and_the_old_rows(store: Store) -> None:
    ok_a = seed(store, "succeeded", 40 * DAY, flow="a")
    bad_a = seed(store, "failed", 40 * DAY, flow="a")
    ok_b = seed(store, "succeeded", 40 * DAY, flow="b")
    cancelled_c = seed(store, "cancelled", 40 * DAY, flow="c")
    seed_old_rows(store, 40 * DAY)
    cutoff = utcnow() - 30 * DAY
    done = store.prune.all(before=cutoff, statuses=[S])
    assert done.runs == 2 and left(store) == {bad_a, cancelled_c}
    assert store.prune.all(before=cutoff, flows=["c"]).runs == 1
    assert left(store) == {bad_a}
    # Filtered: the rate log and the dead letters are not the runs asked for.
    assert rows(store, dead_letters) == 1 and rows(store, rate_log) == 1
    assert ok_a not in left(store) and ok_b not in left(store)
    assert orphans(store) == 0


def test_a_dry_run_counts_what_would_go_and_deletes_nothing(store: Store) -> None:
    for _ in range(3):
        seed(store, "failed", 40 * DAY, n_steps=3)
    seed(store, "running", None)
    seed_old_rows(store, 40 * DAY)
    before = left(store)
    cutoff = utcnow() - 30 * DAY
    counted = store.prune.count(before=cutoff)
    assert counted == Pruned(runs=3, steps=9, signals=3, attempts=3, dead_letters=1, rate_log=1)
    assert left(store) == before and rows(store, steps) == 11
    assert store.prune.count(before=cutoff, statuses=[S]) == Pruned()
    assert store.prune.all(before=cutoff) == counted


def test_runs_go_a_batch_per_transaction(store: Store) -> None:
    for _ in range(5):
        seed(store, "succeeded", 40 * DAY, n_steps=1)
    cutoff = utcnow() - 30 * DAY
    one = store.prune.batch(before=cutoff, limit=2)
    assert one is not None and one.runs == 2 and one.steps == 2
    seen: list[int] = []
    total = store.prune.all(before=cutoff, batch=2, progress=lambda t: seen.append(t.runs))
    assert total.runs == 3 and seen == [2, 3]
    assert left(store) == set()


def test_a_live_status_or_a_bad_batch_is_refused(store: Store) -> None:
    live = seed(store, "running", None)
    cutoff = utcnow()
    with pytest.raises(flowkit.ConfigurationError, match="only finished runs"):
        store.prune.all(before=cutoff, statuses=[RunStatus.RUNNING])
    with pytest.raises(flowkit.ConfigurationError, match="batch"):
        store.prune.batch(before=cutoff, limit=0)
    assert left(store) == {live}


def test_the_sweep_deletes_small_batches_while_they_are_full(store: Store) -> None:
    engine = Engine([GRAPH], store, MemoryPublisher())
    old = {seed(store, "succeeded", 40 * DAY, n_steps=1) for _ in range(5)}
    failed = seed(store, "failed", 40 * DAY)
    live = seed(store, "waiting", None)
    keep = Retention(timedelta(days=30), statuses=(S,), batch=2, batches=2)
    sweeper = Sweeper(engine, ["prune.q"], every=3600, retention=keep)
    try:
        # Two full batches in the first pass; the next pass's first batch is short.
        assert [sweeper.prune() for _ in range(3)] == [4, 1, 0]
    finally:
        sweeper.stop()
    assert left(store) == {failed, live} and not old & left(store)
    assert orphans(store) == 0
    idle = Sweeper(engine, ["prune.q"], every=3600)  # no retention: nothing is deleted
    try:
        assert idle.prune() is None
    finally:
        idle.stop()


def test_a_worker_reads_the_retention_once_and_a_bad_one_fails_its_start(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine([GRAPH], store, MemoryPublisher())
    monkeypatch.setenv("FLOWKIT_RETENTION", "30d")
    monkeypatch.setenv("FLOWKIT_RETENTION_STATUSES", "succeeded, cancelled")
    presence = Presence(engine, queues=["prune.q"], threads=1, every=3600)
    try:
        assert presence.sweeper.retention == Retention(timedelta(days=30), (S, C))
    finally:
        presence.stop()
    monkeypatch.setenv("FLOWKIT_RETENTION", "a month")
    with pytest.raises(flowkit.ConfigurationError, match="FLOWKIT_RETENTION"):
        Presence(engine, queues=["prune.q"], threads=1, every=3600)
    assert rows(store, workers) == 1  # the bad start registered no worker


def test_the_retention_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no project here
    monkeypatch.delenv("FLOWKIT_RETENTION", raising=False)
    monkeypatch.delenv("FLOWKIT_RETENTION_STATUSES", raising=False)
    assert retention_setting() is None
    monkeypatch.setenv("FLOWKIT_RETENTION", "12h")
    keep = retention_setting()
    assert keep == Retention(timedelta(hours=12)) and str(keep) == "12h"
    now = datetime(2030, 1, 2, tzinfo=utcnow().tzinfo)
    assert keep.cutoff(now) == now - timedelta(hours=12)
    monkeypatch.setenv("FLOWKIT_RETENTION", "off")
    assert retention_setting() is None
    for bad, why in (("30s", "too short"), ("-1d", "duration"), ("soon", "duration")):
        monkeypatch.setenv("FLOWKIT_RETENTION", bad)
        with pytest.raises(flowkit.ConfigurationError, match=why):
            retention_setting()
    monkeypatch.setenv("FLOWKIT_RETENTION", "7d")
    monkeypatch.setenv("FLOWKIT_RETENTION_STATUSES", "failed,running")
    with pytest.raises(flowkit.ConfigurationError, match="not finished"):
        retention_setting()
    monkeypatch.delenv("FLOWKIT_RETENTION")
    monkeypatch.delenv("FLOWKIT_RETENTION_STATUSES")
    (tmp_path / "pyproject.toml").write_text('[tool.flowkit]\nretention = "90d"\n')
    assert retention_setting() == Retention(timedelta(days=90))
    monkeypatch.setenv("FLOWKIT_RETENTION", "off")  # the environment overrides the project
    assert retention_setting() is None


def test_statuses_are_parsed_in_order_and_checked() -> None:
    assert parse_statuses(["Timed_Out", "succeeded"], what="--status") == (S, T)
    with pytest.raises(flowkit.ConfigurationError, match="unknown run status 'done'"):
        parse_statuses(["done"], what="--status")
    with pytest.raises(flowkit.ConfigurationError, match="at least one"):
        parse_statuses([" "], what="--status")


def test_the_sweeps_batch_waits_for_the_duty(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("the advisory lock is PostgreSQL's; SQLite serializes its writers")
    old = seed(store, "succeeded", 40 * DAY)
    cutoff = utcnow() - 30 * DAY
    other = sa.create_engine(store.db.sql.url)
    try:
        with other.begin() as conn:  # another worker's pass, under way
            held = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(DUTY_LOCK)))
            assert held.scalar() is True
            assert store.prune.batch(before=cutoff, duty=True) is None
            assert left(store) == {old}
            # `flowkit db prune` takes no duty: it runs beside the sweep.
            done = store.prune.batch(before=cutoff)
            assert done is not None and done.runs == 1
    finally:
        other.dispose()
