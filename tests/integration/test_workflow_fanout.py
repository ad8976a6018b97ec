"""Fan-out and join on RabbitMQ + PostgreSQL with real `flowkit worker` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import flowkit
from flowkit.runtime.publisher import Outgoing, RunRef

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
TARGET = f"{HERE / 'wf_flows.py'}:app"
sys.path.insert(0, str(HERE))

import wf_flows  # noqa: E402
from fk_procs import wait_until  # noqa: E402


class Workers:
    """`flowkit worker` processes for the test, always stopped at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowkit", "worker", TARGET, "--threads", "8", *extra],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


@pytest.fixture
def setup(pg_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[tuple[flowkit.App, Workers]]:
    env = {"FLOWKIT_BROKER_URL": rabbitmq_url, "FLOWKIT_DATABASE_URL": pg_url}
    os.environ.update(env)  # the ledger in this process (duplicate publishing) reads it too
    wf_flows.create_ledger(pg_url)
    app = wf_flows.app
    app.configure(broker_url=rabbitmq_url, database_url=pg_url, embedded_worker=False)
    app.store  # noqa: B018 - create the schema before workers race to
    workers = Workers(env, tmp_path)
    try:
        yield app, workers
    finally:
        workers.stop()
        app.close()
        for k in env:
            os.environ.pop(k, None)


def _counts(url: str, run_id: str) -> dict[str, Any]:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT name, item, status, attempts FROM flowkit_steps WHERE run_id = %s", (run_id,)
        ).fetchall()
        effects = c.execute("SELECT count(*) FROM it_effects").fetchone()[0]
        executions = c.execute("SELECT count(*) FROM it_executions").fetchone()[0]
        finalize_runs = c.execute(
            "SELECT count(*) FROM it_executions WHERE key LIKE %s", ("%:finalize",)
        ).fetchone()[0]
    keys = [(r[0], r[1]) for r in rows]
    return {
        "rows": rows,
        "duplicate_rows": len(keys) - len(set(keys)),
        "items": [r for r in rows if r[0] == "match"],
        "effects": effects,
        "executions": executions,
        "finalize_executions": finalize_runs,
        "retried": sum(1 for r in rows if r[3] > 1),
    }


def _items_done(url: str, run_id: str, at_least: int) -> bool:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as c:
        n = c.execute(
            "SELECT count(*) FROM flowkit_steps WHERE run_id = %s AND name = 'match' "
            "AND status = 'succeeded'",
            (run_id,),
        ).fetchone()[0]
    return int(n) >= at_least


def _check(url: str, run: flowkit.Run, lenders: int) -> dict[str, Any]:
    ranking = run.result(timeout=240)
    assert ranking.count == lenders
    c = _counts(url, run.id)
    assert c["duplicate_rows"] == 0
    assert len(c["items"]) == lenders
    assert all(status == "succeeded" for _, _, status, _ in c["items"])
    assert c["effects"] == lenders + 2  # prepare + each item + finalize, once each
    assert c["finalize_executions"] == 1  # the join ran exactly once
    return c


def test_500_lenders_with_two_worker_processes(setup: Any, pg_url: str) -> None:
    _, workers = setup
    workers.start("--processes", "2")
    run = wf_flows.matching.submit({"lenders": 500})
    c = _check(pg_url, run, 500)
    print(f"500 lenders: {c['executions']} executions, {c['retried']} steps retried")


def test_duplicate_item_messages_never_run_the_join_twice(setup: Any, pg_url: str) -> None:
    app, workers = setup
    run = wf_flows.matching.submit({"lenders": 40})
    workers.start()
    wait_until(lambda: _items_done(pg_url, run.id, 1), 60, "the fan-out to start")
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as c:
        items = c.execute(
            "SELECT id FROM flowkit_steps WHERE run_id = %s AND name = 'match'", (run.id,)
        ).fetchall()
    # Publish every item's message twice more, as a broker redelivery storm would.
    copies = [Outgoing(i, "match", "it.match") for (i,) in items]
    app.engine.publisher.publish(RunRef("it-matching", run.id), copies + copies)
    _check(pg_url, run, 40)


def test_sigkill_during_the_fan_out_leaves_the_join_run_once(setup: Any, pg_url: str) -> None:
    _, workers = setup
    victim = workers.start()
    workers.start()
    run = wf_flows.matching.submit({"lenders": 300, "work_ms": 20})
    wait_until(lambda: _items_done(pg_url, run.id, 30), 90, "30 items to finish")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    workers.start()  # a replacement, as a supervisor would start
    c = _check(pg_url, run, 300)
    print(f"after SIGKILL: {c['executions'] - 302} re-executions, {c['retried']} steps retried")
