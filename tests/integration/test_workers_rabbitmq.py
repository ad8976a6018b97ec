"""Worker rows and heartbeats with real `flowkit worker` processes on RabbitMQ + PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import flowkit

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import wk_flows  # noqa: E402
from fk_procs import Procs, wait_until  # noqa: E402

TARGET = f"{HERE / 'wk_flows.py'}:app"
BEAT = 0.5
#: a worker is not alive once three heartbeats are missing
STALE = 3 * BEAT


@pytest.fixture
def wk(pg_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[tuple[flowkit.App, Procs]]:
    env = {
        "FLOWKIT_BROKER_URL": rabbitmq_url,
        "FLOWKIT_DATABASE_URL": pg_url,
        "FLOWKIT_HEARTBEAT_SECONDS": str(BEAT),
    }
    app = wk_flows.app
    app.configure(broker_url=rabbitmq_url, database_url=pg_url, embedded_worker=False)
    app.store  # noqa: B018 - schema first
    procs = Procs(env, tmp_path)
    try:
        yield app, procs
    finally:
        procs.stop()
        app.close()


def _live(app: flowkit.App) -> dict[int, flowkit.WorkerInfo]:
    return {w.pid: w for w in app.store.workers.list(stale_after=STALE) if w.alive}


def test_two_workers_beat_record_their_steps_and_a_killed_one_goes_stale(
    wk: Any, pg_url: str
) -> None:
    app, procs = wk
    one = procs.start("worker", TARGET, "--threads", "2")
    two = procs.start("worker", TARGET, "--threads", "3", "--queues", "wk.work")
    wait_until(lambda: set(_live(app)) == {one.pid, two.pid}, 60, "two live workers")
    live = _live(app)
    # `flowkit worker` names its queues: all of the target's unless told.
    assert (live[one.pid].threads, live[one.pid].queues) == (2, ("wk.work",))
    assert (live[two.pid].threads, live[two.pid].queues) == (3, ("wk.work",))
    assert {w.version for w in live.values()} == {flowkit.__version__}
    ids = {w.id for w in live.values()}

    runs = [wk_flows.fast.submit(i) for i in range(6)]
    assert [r.result(timeout=60) for r in runs] == [i + 1 for i in range(6)]
    holders = {s.worker_id for r in runs for s in r.steps()}
    assert holders <= ids and None not in holders

    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as hold:
        hold.execute("SELECT pg_advisory_lock(%s)", (wk_flows.HOLD,))
        slow = wk_flows.lasting.submit(7)

        def held() -> bool:
            return any(
                s.run_id == slow.id and s.flow == "wk-slow" and s.name == "slow"
                for w in _live(app).values()
                for s in w.running
            )

        wait_until(held, 30, "the slow step among a worker's running steps")
    # Closing the connection released the lock: the step ends.
    assert slow.result(timeout=60) == 7
    (step,) = slow.steps()
    assert step.worker_id in ids

    status = subprocess.run(
        [sys.executable, "-m", "flowkit", "status", TARGET, "--json"],
        env=procs.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    snap = json.loads(status.stdout)
    assert {w["pid"] for w in snap["workers"]} == {one.pid, two.pid}
    assert snap["workers_lost"] == 0

    one.kill()  # SIGKILL: no stop is recorded, the heartbeats just end
    killed_at = time.monotonic()
    one.wait(10)
    wait_until(lambda: one.pid not in _live(app), STALE + 1.0, "the killed worker to go stale")
    assert time.monotonic() - killed_at <= STALE + 1.0
    (dead,) = [w for w in app.store.workers.list(stale_after=STALE) if w.pid == one.pid]
    assert not dead.alive and dead.stopped_at is None
    assert two.pid in _live(app)

    two.terminate()  # SIGTERM: a clean stop is recorded
    two.wait(30)
    (stopped,) = [w for w in app.store.workers.list() if w.pid == two.pid]
    assert stopped.stopped_at is not None and not stopped.alive


def test_each_process_of_a_supervisor_is_its_own_worker(wk: Any) -> None:
    app, procs = wk
    supervisor = procs.start("worker", TARGET, "--processes", "2", "--threads", "1")
    wait_until(lambda: len(_live(app)) == 2, 60, "two live child workers")
    assert supervisor.pid not in _live(app)
    assert len({w.id for w in _live(app).values()}) == 2
    assert os.getpid() not in _live(app)
