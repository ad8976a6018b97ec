"""Duplicate and redelivered step messages on RabbitMQ: recorded once, never stuck.

At-least-once delivery means a step's message can arrive twice; the database
decides (a guarded claim by message id), so the stage runs once and the run
succeeds once. A redelivery of the message that *completed* a step (its worker
died between the commit and the publish of the successors) re-publishes the
successors still queued, so the run finishes.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
from helpers import (  # noqa: F401 - fixtures
    HERE,
    Workers,
    env_fixture,
    kill_app_fixture,
    query,
    wait_until,
    workers_fixture,
)

from flowkit.runtime.plan import plan_completion
from flowkit.store import Outcome

pytestmark = pytest.mark.integration

TARGET = f"{HERE / 'kill_flows.py'}:app"
FLOW = "it-kill"
STAGES = ("receive", "enrich", "decide", "notify")


def step_message(step: dict[str, Any], run: Any, *, message_id: str | None = None) -> Any:
    """The message flowkit publishes for a step, built by hand (as a broker would resend it)."""
    extra = {} if message_id is None else {"message_id": message_id}
    return dramatiq.Message(
        queue_name=step["queue"],
        actor_name=f"{FLOW}.{step['name']}",
        args=(),
        kwargs={"step_id": step["id"], "run_id": run.id, "key": step["key"]},
        options={},
        **extra,
    )


def queued_step(url: str, run_id: str, name: str) -> dict[str, Any]:
    rows = query(
        url,
        "SELECT s.id, s.name, s.queue, s.status, r.key FROM flowkit_steps s "
        "JOIN flowkit_runs r ON r.id = s.run_id WHERE s.run_id = %s AND s.name = %s",
        (run_id, name),
    )
    assert len(rows) == 1, rows
    sid, sname, queue, status, key = rows[0]
    assert status == "queued", status
    return {"id": sid, "name": sname, "queue": queue, "key": key}


def executions(url: str, run_id: str) -> dict[str, list[int]]:
    """The attempts in which each stage function ran for this run (from the ledger)."""
    out: dict[str, list[int]] = {}
    for step, attempt in query(
        url,
        "SELECT step, attempt FROM kill_executions WHERE run_id = %s ORDER BY id",
        (run_id,),
    ):
        out.setdefault(step, []).append(int(attempt))
    return out


def step_rows(url: str, run_id: str) -> dict[str, tuple[str, int]]:
    rows = query(
        url, "SELECT name, status, attempts FROM flowkit_steps WHERE run_id = %s", (run_id,)
    )
    names = [r[0] for r in rows]
    assert len(names) == len(set(names)), f"a step recorded twice: {sorted(names)}"
    return {r[0]: (r[1], int(r[2])) for r in rows}


def _check_once(url: str, run: Any) -> None:
    result = run.result(timeout=60)
    assert result.seen == list(STAGES)
    assert run.status().value == "succeeded"
    rows = step_rows(url, run.id)
    assert {n: s for n, (s, _) in rows.items()} == dict.fromkeys(STAGES, "succeeded")
    ran = executions(url, run.id)
    print(f"\nstep rows (status, attempts): {rows}; stage functions ran in attempts: {ran}")
    assert ran == {s: [1] for s in STAGES}, f"stage functions ran: {ran}"
    assert rows["receive"][1] == 1, f"receive claimed {rows['receive'][1]} times"
    effects = query(url, "SELECT key, hits FROM kill_effects WHERE key LIKE %s", (f"{run.id}:%",))
    assert sorted(effects) == sorted((f"{run.id}:{s}", 1) for s in STAGES)


def test_copies_of_a_step_message_run_the_stage_once(
    kill_app: Any, workers: Workers, pg_url: str
) -> None:
    """The original message plus two copies with new ids (as re-publishing sends them)."""
    pipeline = kill_app.flow(FLOW)
    # 300 ms of simulated work: the copies are taken by worker threads while
    # the first message is still running the stage.
    run = pipeline.submit({"n": 1, "work_ms": 300}, key="copies")
    step = queued_step(pg_url, run.id, "receive")
    kill_app.broker.enqueue(step_message(step, run))
    kill_app.broker.enqueue(step_message(step, run))
    workers.start(TARGET, threads=4).wait_started()
    _check_once(pg_url, run)


def test_one_message_delivered_twice_runs_the_stage_once(
    kill_app: Any, workers: Workers, pg_url: str
) -> None:
    """The same message (same id) delivered twice, e.g. a publish retried after a lost confirm."""
    pipeline = kill_app.flow(FLOW)
    run = pipeline.submit({"n": 1, "work_ms": 300}, key="same-id")
    step = queued_step(pg_url, run.id, "receive")
    assert kill_app.engine.publisher.flush(60)  # the submit's message is on the broker
    kill_app.broker.flush_all()  # only the two deliveries of one message remain
    message = step_message(step, run)
    kill_app.broker.enqueue(message)
    kill_app.broker.enqueue(message)
    workers.start(TARGET, threads=4).wait_started()
    _check_once(pg_url, run)


def _crash_after_commit(app: Any, url: str, run: Any, message_id: str) -> dict[str, Any]:
    """Do what a worker does for ``receive`` up to its commit, then "die": no publish.

    The step is claimed by ``message_id``, its output recorded and its
    successor ``enrich`` inserted queued in one transaction; nothing is sent.
    """
    step = queued_step(url, run.id, "receive")
    flow = app.flow(FLOW).compile()
    stage = flow.steps["receive"]
    claim = app.store.runs.claim(step["id"], message_id, lease_ms=60_000, starts_run=True)
    assert claim is not None and claim.attempts == 1
    value = stage.output_adapter.validate_python(
        {"n": claim.input["n"], "work_ms": 0, "seen": ["receive"]}
    )
    output = stage.output_adapter.dump_python(value, mode="json")
    plan = plan_completion(flow, "receive", None, output)
    done = app.store.runs.complete(
        step["id"],
        message_id,
        run.id,
        Outcome(output=output, inserts=plan.inserts, gates=plan.gates, end=plan.end),
    )
    assert done is not None and [s.name for s in done.ready] == ["enrich"]
    assert queued_step(url, run.id, "enrich")["queue"] == "itk.enrich"
    return step


def test_redelivery_of_the_completing_message_publishes_the_queued_successor(
    kill_app: Any, workers: Workers, pg_url: str
) -> None:
    pipeline = kill_app.flow(FLOW)
    run = pipeline.submit({"n": 2}, key="redelivered")
    assert kill_app.engine.publisher.flush(60)  # the submit's message is on the broker
    kill_app.broker.flush_all()  # the original message was "delivered" to the dead worker
    message_id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    step = _crash_after_commit(kill_app, pg_url, run, message_id)
    assert run.status().value == "running"

    # The broker redelivers the unacknowledged message to a new worker.
    kill_app.broker.enqueue(step_message(step, run, message_id=message_id))
    worker = workers.start(TARGET, threads=4)
    worker.wait_started()
    result = run.result(timeout=60)
    assert result.seen == list(STAGES)

    rows = step_rows(pg_url, run.id)
    assert {n: s for n, (s, _) in rows.items()} == dict.fromkeys(STAGES, "succeeded")
    assert rows["receive"][1] == 1  # not claimed again
    # receive's function never ran again (its completion was already recorded).
    assert executions(pg_url, run.id) == {s: [1] for s in STAGES[1:]}
    wait_until(
        lambda: "re-publishing 1 successor(s) of step receive" in worker.output(),
        10,
        what="the worker's re-publishing log line",
    )


def test_lost_publish_is_redriven_by_flowkit_recover(
    kill_app: Any, workers: Workers, pg_url: str, env: dict[str, str], cli: Any
) -> None:
    """The completing message is gone too (e.g. the broker lost it): `flowkit recover`."""
    pipeline = kill_app.flow(FLOW)
    run = pipeline.submit({"n": 3}, key="lost")
    assert kill_app.engine.publisher.flush(60)  # the submit's message is on the broker
    kill_app.broker.flush_all()
    _crash_after_commit(kill_app, pg_url, run, "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d")
    worker = workers.start(TARGET, threads=4)
    worker.wait_started()
    assert run.status().value == "running"

    res = cli("recover", "--force", "--older-than", "0s", env=env)
    assert res.returncode == 0, res.stderr
    assert "re-published 1 step(s)" in res.stdout
    assert "guest:guest" not in res.stdout + res.stderr
    result = run.result(timeout=60)
    assert result.seen == list(STAGES)
    rows = step_rows(pg_url, run.id)
    assert {n: s for n, (s, _) in rows.items()} == dict.fromkeys(STAGES, "succeeded")
    assert executions(pg_url, run.id) == {s: [1] for s in STAGES[1:]}
