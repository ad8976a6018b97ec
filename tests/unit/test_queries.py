"""The run query layer (store.queries) and error types, on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import flowkit
from flowkit._ids import new_id
from flowkit.store import NewStep, RunFilter, RunPage, Store, transitions
from flowkit.store.queries import Queries
from flowkit.store.schema import runs

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _insert(store: Store, **row: Any) -> str:
    """A run row as the queries see it, with a chosen created_at."""
    values = {
        "id": new_id(),
        "flow": "f",
        "key": None,
        "status": "succeeded",
        "created_at": T0,
        **row,
    }
    with store.db.transaction() as conn:
        conn.execute(runs.insert().values(**values))
    return str(values["id"])


def _all(q: Queries, f: RunFilter, limit: int) -> list[flowkit.RunInfo]:
    """Every page of ``f``, following the cursors; fails on a loop."""
    out: list[flowkit.RunInfo] = []
    cursor = None
    for _ in range(1000):
        page = q.page(f, limit=limit, cursor=cursor)
        assert len(page.runs) <= limit
        out.extend(page.runs)
        cursor = page.next_cursor
        if cursor is None:
            return out
    raise AssertionError("the cursors never ended")


def _ids(page: RunPage | list[flowkit.RunInfo]) -> list[str]:
    found = page.runs if isinstance(page, RunPage) else page
    return [r.id for r in found]


def test_pages_cover_every_run_once_newest_first_with_equal_timestamps(store: Store) -> None:
    # Five runs share each timestamp: the id breaks the tie, on both sides of a page.
    made = [
        (T0 + timedelta(seconds=i // 5), _insert(store, created_at=T0 + timedelta(seconds=i // 5)))
        for i in range(23)
    ]
    expected = [run_id for _, run_id in sorted(made, reverse=True)]
    for limit in (1, 4, 5, 7, 23, 50):
        assert _ids(_all(store.queries, RunFilter(), limit)) == expected, limit
    first = store.queries.page(RunFilter(), limit=23)
    assert first.next_cursor is None and len(first.runs) == 23
    assert store.queries.page(RunFilter(), limit=22).next_cursor is not None


def test_a_run_created_between_pages_shifts_nothing(store: Store) -> None:
    old = [_insert(store, created_at=T0 + timedelta(seconds=i)) for i in range(6)]
    page = store.queries.page(RunFilter(), limit=3)
    assert _ids(page) == old[::-1][:3]
    _insert(store, created_at=T0 + timedelta(seconds=100))  # newer: on page 1, not page 2
    rest = store.queries.page(RunFilter(), limit=3, cursor=page.next_cursor)
    assert _ids(rest) == old[::-1][3:]
    assert rest.next_cursor is None


def test_each_filter_and_their_combination(store: Store) -> None:
    a_ok = _insert(store, flow="a", status="succeeded", key="t1:1", created_at=T0)
    a_bad = _insert(
        store,
        flow="a",
        status="failed",
        key="t1:2",
        error_type="ValueError",
        created_at=T0 + timedelta(minutes=1),
    )
    b_bad = _insert(
        store,
        flow="b",
        status="failed",
        key="t2:1",
        error_type="KeyError",
        created_at=T0 + timedelta(minutes=2),
    )
    b_late = _insert(
        store,
        flow="b",
        status="timed_out",
        key="T1:3",
        error_type="RunTimeout",
        created_at=T0 + timedelta(minutes=3),
    )
    q = store.queries

    def ids(**f: Any) -> set[str]:
        return set(_ids(_all(q, RunFilter(**f), 2)))

    assert ids() == {a_ok, a_bad, b_bad, b_late}
    assert ids(flow="a") == {a_ok, a_bad}
    assert ids(status="failed") == {a_bad, b_bad}
    assert ids(status=flowkit.RunStatus.TIMED_OUT) == {b_late}
    assert ids(error_type="KeyError") == {b_bad}
    assert ids(key_prefix="t1:") == {a_ok, a_bad}  # case-sensitive: not "T1:3"
    assert ids(key_prefix="T") == {b_late}
    assert ids(key_prefix="") == ids()
    assert ids(since=T0 + timedelta(minutes=1)) == {a_bad, b_bad, b_late}
    assert ids(until=T0 + timedelta(minutes=1)) == {a_ok}
    assert ids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == {a_bad, b_bad}
    assert ids(flow="a", status="failed", key_prefix="t1") == {a_bad}
    assert ids(flow="b", error_type="ValueError") == set()
    # An aware time in another zone, and a naive one (taken as UTC), mean the same instant.
    plus2 = timezone(timedelta(hours=2))
    assert ids(since=(T0 + timedelta(minutes=2)).astimezone(plus2)) == {b_bad, b_late}
    assert ids(since=(T0 + timedelta(minutes=2)).replace(tzinfo=None)) == {b_bad, b_late}


def test_a_key_prefix_matches_percent_underscore_and_backslash_literally(store: Store) -> None:
    pct = _insert(store, key="50%off:1")
    under = _insert(store, key="a_b:1")
    slash = _insert(store, key="c\\d:1")
    decoys = [_insert(store, key=k) for k in ("50xoff:1", "50off", "axb:1", "c\\\\d", "cxd:1")]
    q = store.queries

    def ids(prefix: str) -> set[str]:
        return set(_ids(q.page(RunFilter(key_prefix=prefix))))

    assert ids("50%") == {pct}
    assert ids("50%off") == {pct}
    assert ids("a_") == {under}
    assert ids("c\\d") == {slash}
    assert ids("%") == set() and ids("_") == set()
    assert len(ids("5")) == 3  # an ordinary prefix still matches everything it should
    assert decoys


def test_a_key_prefix_ending_in_the_last_code_point(store: Store) -> None:
    top = _insert(store, key="k\U0010ffff:1")
    _insert(store, key="k:1")
    assert _ids(store.queries.page(RunFilter(key_prefix="k\U0010ffff"))) == [top]


@pytest.mark.parametrize(
    "cursor",
    [
        "not-base64!",
        "",
        base64.urlsafe_b64encode(b"no separator").decode(),
        base64.urlsafe_b64encode(b"yesterday|abc").decode(),
        base64.urlsafe_b64encode(b"2026-03-01T12:00:00|abc").decode(),  # no time zone
        base64.urlsafe_b64encode(b"2026-03-01T12:00:00+00:00|").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),
    ],
)
def test_a_malformed_cursor_is_refused_clearly(store: Store, cursor: str) -> None:
    with pytest.raises(flowkit.InvalidQuery, match="malformed page cursor"):
        store.queries.page(RunFilter(), cursor=cursor)
    assert issubclass(flowkit.InvalidQuery, flowkit.ConfigurationError)


def test_bad_filter_values_are_refused(store: Store) -> None:
    with pytest.raises(flowkit.InvalidQuery, match="unknown run status 'done'"):
        store.queries.page(RunFilter(status="done"))
    for limit in (0, 1001):
        with pytest.raises(flowkit.InvalidQuery, match="limit"):
            store.queries.page(RunFilter(), limit=limit)


def test_cursors_are_url_safe(store: Store) -> None:
    for i in range(3):
        _insert(store, created_at=T0 + timedelta(microseconds=i))
    page = store.queries.page(RunFilter(), limit=1)
    assert page.next_cursor is not None
    assert set(page.next_cursor) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )


def _started(store: Store) -> tuple[str, NewStep]:
    step = NewStep(id=new_id(), name="s", queue="q", input={})
    run_id = store.runs.create(run_id=new_id(), flow="f", key=None, input={}, first=[step]).run_id
    return run_id, step


def test_error_type_is_recorded_for_failed_and_timed_out_runs(store: Store) -> None:
    failed, step = _started(store)
    store.runs.claim(step.id, "m", lease_ms=1000, starts_run=True)
    store.runs.fail(step.id, failed, {"type": "ValueError", "message": "no", "step": "s"})
    timed_out, _ = _started(store)
    store.control.time_out_run(timed_out, {"type": "RunTimeout", "message": "late"})
    cancelled, _ = _started(store)
    store.control.cancel(cancelled)
    info = {r: store.get_run(r) for r in (failed, timed_out, cancelled)}
    assert info[failed].error_type == "ValueError"  # type: ignore[union-attr]
    assert info[timed_out].error_type == "RunTimeout"  # type: ignore[union-attr]
    assert info[cancelled].error_type is None  # type: ignore[union-attr]
    assert _ids(store.queries.page(RunFilter(error_type="ValueError"))) == [failed]
    assert store.queries.error_types() == ["RunTimeout", "ValueError"]
    assert store.queries.error_types(flow="other") == []


def test_a_retried_run_forgets_its_error_type(store: Store) -> None:
    run_id, step = _started(store)
    store.runs.claim(step.id, "m", lease_ms=1000, starts_run=True)
    store.runs.fail(step.id, run_id, {"type": "ValueError", "message": "no", "step": "s"})
    with store.db.transaction() as conn:
        transitions.restart_run(conn, run_id)
    assert store.get_run(run_id).error_type is None  # type: ignore[union-attr]


def test_counts_are_group_by_queries_cached_for_a_few_seconds(store: Store) -> None:
    _insert(store, flow="a", status="failed", error_type="E")
    _insert(store, flow="a", status="succeeded")
    _insert(store, flow="b", status="succeeded")
    q = store.queries
    zeros = {s.value: 0 for s in flowkit.RunStatus}
    assert q.counts() == {**zeros, "failed": 1, "succeeded": 2}
    assert q.counts(flow="a") == {**zeros, "failed": 1, "succeeded": 1}
    assert q.counts_by_flow() == {
        "a": {**zeros, "failed": 1, "succeeded": 1},
        "b": {**zeros, "succeeded": 1},
    }
    _insert(store, flow="c", status="running")
    assert q.counts()["running"] == 0  # cached
    assert "c" not in q.counts_by_flow()
    q.counts()["running"] = 99  # a caller's copy, not the cache
    assert q.counts()["running"] == 0
    q.clear_cache()
    assert q.counts()["running"] == 1
    assert q.counts_by_flow()["c"]["running"] == 1
    uncached = Queries(store.db, cache_seconds=0)
    _insert(store, flow="c", status="running")
    assert uncached.counts()["running"] == 2


def test_steps_and_runs_expose_the_new_columns(store: Store) -> None:
    run_id, step = _started(store)
    store.runs.claim(step.id, "m", lease_ms=1000, starts_run=True, worker_id="w" * 32)
    (got,) = store.get_steps(run_id)
    assert got.worker_id == "w" * 32
    assert store.get_run(run_id).error_type is None  # type: ignore[union-attr]


def test_upgrading_from_0001_backfills_error_types(database_url: str) -> None:
    from alembic import command

    from flowkit.store import migrate

    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0001")
        old = sa.table(
            "flowkit_runs",
            *(sa.column(c) for c in ("id", "flow", "status", "created_at")),
            sa.column("error", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
        )
        with engine.begin() as conn:
            conn.execute(
                old.insert(),
                [
                    {
                        "id": "r1",
                        "flow": "f",
                        "status": "failed",
                        "created_at": T0,
                        "error": {"type": "ValueError", "message": "x"},
                    },
                    {
                        "id": "r2",
                        "flow": "f",
                        "status": "timed_out",
                        "created_at": T0,
                        "error": {"type": "RunTimeout"},
                    },
                    {
                        "id": "r3",
                        "flow": "f",
                        "status": "succeeded",
                        "created_at": T0,
                        "error": None,
                    },
                ],
            )
    finally:
        engine.dispose()
    store = Store(database_url, pool_size=2)
    try:
        store.ensure_schema()
        assert {r: store.get_run(r).error_type for r in ("r1", "r2", "r3")} == {  # type: ignore[union-attr]
            "r1": "ValueError",
            "r2": "RunTimeout",
            "r3": None,
        }
    finally:
        store.dispose()


def test_stopped_and_stop_reason_filters(store: Store) -> None:
    plain = _insert(store, created_at=T0)
    small = _insert(store, stop_reason="too small", created_at=T0 + timedelta(seconds=1))
    other = _insert(store, stop_reason="too small!", created_at=T0 + timedelta(seconds=2))
    q = store.queries
    assert _ids(q.page(RunFilter(stopped=True))) == [other, small]
    assert _ids(q.page(RunFilter(stopped=False))) == [plain]
    assert _ids(q.page(RunFilter(stop_reason="too small"))) == [small]  # exact, not a prefix
    assert _ids(q.page(RunFilter(stopped=True, stop_reason="nope"))) == []
    assert _ids(_all(q, RunFilter(stopped=True), limit=1)) == [other, small]
