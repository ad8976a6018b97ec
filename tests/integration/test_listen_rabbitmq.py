"""``Run.wait`` woken by PostgreSQL LISTEN/NOTIFY, with real ``flowkit worker`` processes.

Migration 0006's trigger announces each run that ends on the channel
``flowkit_run_finished``; the App's listener (started by the first wait) wakes that
run's waiters. Whether a wake-up came from a notification is read from the App's
counters (``finishes.notified``), never from timing: the waiters' fallback check is
set far beyond each test's timeouts.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import (  # noqa: F401 - fixtures
    Workers,
    bound_app,
    dsn,
    env_fixture,
    query,
    scalar,
    wait_until,
    workers_fixture,
)

import flowkit
from flowkit.run import LISTEN_FALLBACK
from flowkit.store import Store
from flowkit.store.notify import CHANNEL, RunListener

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import ls_flows  # noqa: E402

TARGET = f"{HERE / 'ls_flows.py'}:app"
#: longer than any wait here: a wait that returns was woken, not polled
NEVER = 600.0


@pytest.fixture
def ls(pg_url: str, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[flowkit.App]:
    monkeypatch.delenv("FLOWKIT_LISTEN", raising=False)
    with bound_app(ls_flows.app, pg_url, rabbitmq_url) as app:
        app.finishes.fallback = NEVER
        yield app
    app.finishes.fallback = LISTEN_FALLBACK


@pytest.fixture
def worker(ls: flowkit.App, workers: Workers) -> Workers:
    workers.start(TARGET, threads=4).wait_started()
    return workers


def _notes_until(conn: psycopg.Connection, last: str, timeout: float = 60) -> list[str]:
    """The payloads received on ``conn`` up to and including ``last``."""
    seen: list[str] = []
    for note in conn.notifies(timeout=timeout):
        seen.append(note.payload)
        if note.payload == last:
            return seen
    raise AssertionError(f"no notification {last!r} within {timeout}s; got {seen}")


def _live_listener(app: flowkit.App) -> RunListener:
    listener = app.finishes.listen(app.store)
    assert listener is not None
    wait_until(lambda: listener.live, 30, interval=0.02, what="the listener's LISTEN")
    return listener


def _listeners(pg_url: str) -> int:
    """The listener connections to this test's database (other tests may run elsewhere)."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'flowkit listen'"
    )
    return int(scalar(pg_url, sql))


def _hold(pg_url: str) -> psycopg.Connection:
    """A connection holding the lock that ``ls_flows.held`` waits for."""
    conn = psycopg.connect(dsn(pg_url), autocommit=True)
    conn.execute("SELECT pg_advisory_lock(%s)", (ls_flows.HOLD,))
    return conn


def _release_when_waited(
    app: flowkit.App, run_id: str, hold: psycopg.Connection
) -> threading.Thread:
    """Release the held step once one thread waits for ``run_id``'s notification."""

    def release() -> None:
        wait_until(lambda: app.finishes.waiters(run_id) == 1, 30, interval=0.01, what="a waiter")
        hold.execute("SELECT pg_advisory_unlock(%s)", (ls_flows.HOLD,))

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def test_the_trigger_announces_only_changes_to_a_terminal_status(pg_url: str) -> None:
    store = Store(pg_url, pool_size=2)
    store.ensure_schema()
    store.dispose()
    run = "INSERT INTO flowkit_runs (id, flow, status, created_at) VALUES (%s, 'f', %s, now())"
    status = "UPDATE flowkit_runs SET status = %s WHERE id = %s"
    with psycopg.connect(dsn(pg_url), autocommit=True) as listen:
        listen.execute(f"LISTEN {CHANNEL}")
        # Each statement is its own transaction: notifications come in commit order.
        for rid, first in (
            ("r1", "pending"),
            ("r2", "running"),
            ("r3", "pending"),
            ("r4", "waiting"),
        ):
            query(pg_url, run, (rid, first))
        for new in ("running", "waiting", "running", "succeeded", "succeeded"):
            query(pg_url, status, (new, "r1"))
        query(pg_url, "UPDATE flowkit_runs SET finished_at = now() WHERE id = 'r1'")
        query(pg_url, status, ("failed", "r2"))
        query(pg_url, status, ("cancelled", "r3"))
        query(pg_url, status, ("timed_out", "r4"))
        query(pg_url, status, ("running", "r1"))  # a retry from the failed step...
        query(pg_url, status, ("succeeded", "r1"))  # ...and its end, announced again
        query(
            pg_url, "UPDATE flowkit_runs SET status = 'cancelled'"
        )  # each but r3 changes: 3 notes
        query(pg_url, "UPDATE flowkit_runs SET status = 'cancelled'")  # nothing changes: none
        query(pg_url, "SELECT pg_notify(%s, 'end')", (CHANNEL,))
        notes = _notes_until(listen, "end")
    assert notes[:5] == ["r1", "r2", "r3", "r4", "r1"]
    assert sorted(notes[5:-1]) == ["r1", "r2", "r4"] and notes[-1] == "end"


def test_every_way_a_run_ends_is_announced(ls: flowkit.App, worker: Workers, pg_url: str) -> None:
    with psycopg.connect(dsn(pg_url), autocommit=True) as listen:
        listen.execute(f"LISTEN {CHANNEL}")
        done = ls_flows.fast.submit(1)  # the one-statement completion
        broken = ls_flows.failing.submit(2)  # a final failure
        hold = _hold(pg_url)
        try:
            cancelled = ls_flows.slow.submit(3)
            late = ls_flows.timed.submit(4)  # past its deadline while held
            wait_until(
                lambda: cancelled.status() is flowkit.RunStatus.RUNNING, 30, what="a held step"
            )
            assert ls.cancel(cancelled.id)
            ended = {done.id, broken.id, cancelled.id, late.id}
            seen: set[str] = set()
            for note in listen.notifies(timeout=60):
                seen.add(note.payload)
                if seen >= ended:
                    break
        finally:
            hold.close()
    assert seen == ended
    assert [r.status().value for r in (done, broken, cancelled, late)] == [
        "succeeded",
        "failed",
        "cancelled",
        "timed_out",
    ]


def test_wait_is_woken_by_the_notification_of_a_run_ended_by_a_worker(
    ls: flowkit.App, worker: Workers, pg_url: str
) -> None:
    assert ls_flows.fast.submit(0).result(timeout=60) == 1  # starts the listener
    listener = _live_listener(ls)
    assert ls.finishes.listen(ls.store) is listener  # one per App
    apps = _listeners(pg_url)
    assert apps == 1
    before = ls.finishes.notified
    hold = _hold(pg_url)
    try:
        run = ls_flows.slow.submit(5)
        release = _release_when_waited(ls, run.id, hold)
        assert run.result(timeout=60) == 50
        release.join(10)
    finally:
        hold.close()
    # Not polled (the fallback is NEVER), not woken in-process (the worker ended it).
    assert ls.finishes.notified == before + 1
    assert ls.finishes.waiters(run.id) == 0
    assert listener.connects == 1


def test_with_flowkit_listen_0_wait_polls(
    ls: flowkit.App, worker: Workers, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWKIT_LISTEN", "0")
    before = ls.finishes.notified  # the App (a module's) lives across tests
    runs = [ls_flows.fast.submit(i) for i in range(5)]
    assert [r.result(timeout=60) for r in runs] == [1, 2, 3, 4, 5]
    assert ls.finishes.listener is None and ls.finishes.notified == before
    apps = _listeners(pg_url)
    assert apps == 0


def test_a_listener_whose_connection_is_killed_listens_again(
    ls: flowkit.App, worker: Workers, pg_url: str
) -> None:
    listener = _live_listener(ls)
    first = listener.backend_pid
    hold = _hold(pg_url)
    try:
        run = ls_flows.slow.submit(6)
        waiting = threading.Thread(target=lambda: run.result(timeout=60), daemon=True)
        waiting.start()
        wait_until(lambda: ls.finishes.waiters(run.id) == 1, 30, interval=0.01, what="a waiter")
        assert scalar(pg_url, "SELECT pg_terminate_backend(%s)", (first,)) is True
        wait_until(
            lambda: listener.connects == 2 and listener.live, 30, interval=0.02, what="a reconnect"
        )
        assert listener.backend_pid != first
        before = ls.finishes.notified
        hold.execute("SELECT pg_advisory_unlock(%s)", (ls_flows.HOLD,))
        waiting.join(60)
    finally:
        hold.close()
    assert not waiting.is_alive()
    assert run.status() is flowkit.RunStatus.SUCCEEDED
    assert ls.finishes.notified == before + 1  # the new connection's notification woke it
    ls.close()
    assert not listener.live and ls.finishes.listener is None
