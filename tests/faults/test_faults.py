"""The fault suite: real faults on real workers, and a ledger that counts what they cost.

Every scenario drives ``flowkit worker`` processes against the local RabbitMQ
and PostgreSQL, disturbs them (SIGKILL, fault hooks, a stopped broker, a
restarted database, malformed messages, a poison step, SIGTERM), waits for
quiescence (bounded) and prints one ``FAULTS`` line: runs accepted, succeeded
and failed; lost and stuck runs; duplicated effects; re-executions; the time
to recover. Each asserts 0 lost, 0 stuck, 0 duplicated, and a bound on the
re-executions that says where they come from. Services a scenario stops are
started again whatever happens.

Run it alone with ``nox -s faults`` or ``pytest -m faults``.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import faultkit
import pika
import pytest
from fault_fixtures import checker_fixture, fk_fixture, load_fixture  # noqa: F401 - fixtures
from faultkit import (
    TARGET,
    Checker,
    Submitter,
    child_pids,
    finished,
    kill_under_load,
    running_steps,
)
from helpers import (  # noqa: F401 - fixtures
    Workers,
    env_fixture,
    query,
    scalar,
    wait_until,
    workers_fixture,
)

import flowkit

pytestmark = [pytest.mark.integration, pytest.mark.faults]


# -- 1. SIGKILL under load ------------------------------------------------------
def test_sigkill_worker_processes_under_load(
    fk: Any, workers: Workers, pg_url: str, checker: Checker, load: Callable[..., Submitter]
) -> None:
    n, threads, kills = 1000, 4, 3
    rng = random.Random()
    sup = workers.start(TARGET, "--processes", "2", threads=threads, name="sup")
    sup.wait_started(count=2)
    sub = load(fk.ledger, n, work_ms=5)
    killed = kill_under_load(sup, pg_url, n, kills, rng)
    last_kill = time.monotonic()
    accepted = sub.finish()
    checker.settle(accepted, ("fk",), 180)
    rep = checker.report(
        "1. SIGKILL x3 under load",
        accepted,
        recovery_s=time.monotonic() - last_kill,
        note=f"{kills} kills, {threads} threads each",
        kills=killed,
    )
    assert rep.succeeded == n
    # Only steps running in a killed process run again: at most `threads` per kill.
    checker.assert_clean(rep, max_reexecutions=kills * threads)
    # The supervisor restarts a killed child after a backoff (0.5 s, doubling on
    # quick crashes in a row), so the last one may still be on its way back.
    wait_until(lambda: len(child_pids(sup)) == 2, 60, what="the supervisor's restarts")
    assert sup.alive() and len(child_pids(sup)) == 2  # the supervisor restarted them


# -- 2. SIGKILL at each fault hook ---------------------------------------------
@pytest.mark.parametrize("point", ["before-commit", "after-commit", "after-publish"])
def test_sigkill_at_a_fault_hook(
    fk: Any, workers: Workers, env: dict[str, str], pg_url: str, checker: Checker, point: str
) -> None:
    n, threads = 60, 4
    workers.env["FLOWKIT_FAULT"] = f"{point}@25"
    try:
        dying = workers.start(TARGET, threads=threads, name=f"dying-{point}")
    finally:
        workers.env.pop("FLOWKIT_FAULT")
    dying.wait_started()
    accepted = {fk.ledger.submit({"n": i}, key=f"h-{i}").id for i in range(n)}
    assert dying.proc.wait(60) == 137, dying.output()[-2000:]
    died = time.monotonic()
    workers.start(TARGET, threads=threads, name="clean").wait_started()
    checker.settle(accepted, ("fk",), 90)
    rep = checker.report(f"2. kill at {point}", accepted, recovery_s=time.monotonic() - died)
    assert rep.succeeded == n
    # Steps in flight in the dying process (at most `threads`) may run again;
    # at after-commit/after-publish the killed step itself is recorded and is not.
    checker.assert_clean(rep, max_reexecutions=threads)


def test_sigkill_a_submitter_between_commit_and_publish(
    fk: Any, workers: Workers, env: dict[str, str], pg_url: str, checker: Checker
) -> None:
    script = (
        "import sys, fault_flows as f\n"
        "for i in range(10):\n"
        "    r = f.ledger.submit({'n': i}, key=f's-{i}')\n"
        "    print(r.id, flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env={
            **workers.env,
            "FLOWKIT_FAULT": "submit-after-commit@5",
            "PYTHONPATH": str(faultkit.HERE),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 137, proc.stderr[-2000:]
    reported = set(proc.stdout.split())
    assert len(reported) == 4  # the fifth was stored, then the process died
    workers.start(TARGET, threads=4).wait_started()
    began = time.monotonic()
    recover = subprocess.run(
        [sys.executable, "-m", "flowkit", "recover", "--older-than", "0s"],
        env=workers.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert recover.returncode == 0, recover.stderr
    checker.settle(reported, ("fk",), 60)
    rep = checker.report(
        "2. kill at submit-after-commit",
        reported,
        recovery_s=time.monotonic() - began,
        note="5th run stored unsent; flowkit recover sent it",
    )
    assert rep.succeeded == 5
    checker.assert_clean(rep, max_reexecutions=0)


# -- 3. RabbitMQ stopped for 20 s ------------------------------------------------
def test_rabbitmq_stopped_for_20s_under_load(
    fk: Any, workers: Workers, pg_url: str, checker: Checker, load: Callable[..., Submitter]
) -> None:
    n, threads = 400, 4
    workers.start(TARGET, threads=threads).wait_started()
    sub = load(fk.ledger, n, work_ms=5, every=0.05)
    wait_until(lambda: finished(pg_url) >= 40, 60, interval=0.05)
    with faultkit.rabbitmq_stopped():
        threading.Event().wait(20)  # the outage itself lasts 20 s (the fault, not a sync)
    back = time.monotonic()
    accepted = sub.finish(240)
    checker.settle(accepted, ("fk",), 180)
    rep = checker.report(
        "3. RabbitMQ stopped 20s",
        accepted,
        recovery_s=time.monotonic() - back,
        note=f"{sub.refused} submits refused (BrokerError), retried with their key",
    )
    assert rep.succeeded == n
    assert sub.refused > 0  # submits met the outage
    checker.assert_clean(rep, max_reexecutions=2 * threads)


# -- 4. connections closed ------------------------------------------------------
def test_rabbitmq_connections_closed_under_load_with_prefetch(
    fk: Any, workers: Workers, pg_url: str, checker: Checker, load: Callable[..., Submitter]
) -> None:
    n, threads, closes = 600, 4, 3  # Dramatiq prefetches 2 x threads per queue
    w = workers.start(TARGET, threads=threads)
    w.wait_started()
    sub = load(fk.ledger, n, work_ms=5)
    for k in range(closes):
        wait_until(lambda t=(k + 1) * n // 5: finished(pg_url) >= t, 120, interval=0.05)
        faultkit.close_all_rabbitmq_connections()
    last = time.monotonic()
    accepted = sub.finish(240)
    checker.settle(accepted, ("fk",), 180)
    rep = checker.report(
        "4. close_all_connections x3",
        accepted,
        recovery_s=time.monotonic() - last,
        note=f"prefetch {2 * threads}",
    )
    assert rep.succeeded == n
    assert w.alive()
    checker.assert_clean(rep, max_reexecutions=closes * threads)


# -- 5. PostgreSQL restarted / connections cut -----------------------------------
def test_postgres_restarted_immediate_under_load(
    fk: Any, workers: Workers, pg_url: str, checker: Checker, load: Callable[..., Submitter]
) -> None:
    n, threads = 400, 4
    w = workers.start(TARGET, threads=threads)
    w.wait_started()
    sub = load(fk.ledger, n, work_ms=5, every=0.02)
    wait_until(lambda: finished(pg_url) >= n // 4, 120, interval=0.05)
    booted = scalar(pg_url, "SELECT pg_postmaster_start_time()")
    faultkit.postgres_restart_immediate()
    back = time.monotonic()
    assert scalar(pg_url, "SELECT pg_postmaster_start_time()") > booted
    accepted = sub.finish(240)
    checker.settle(accepted, ("fk",), 180)
    rep = checker.report(
        "5. PostgreSQL restart -m immediate",
        accepted,
        recovery_s=time.monotonic() - back,
        note=f"{sub.refused} submits refused (StoreError), retried",
    )
    assert rep.succeeded == n
    assert w.alive()
    checker.assert_clean(rep, max_reexecutions=2 * threads)


def test_database_connections_terminated_after_commits(
    fk: Any,
    workers: Workers,
    pg_url: str,
    rabbitmq_url: str,
    checker: Checker,
    load: Callable[..., Submitter],
) -> None:
    n, threads, cuts = 400, 4, 10
    name = "flowkit-fault-worker"
    w = workers.start(
        TARGET, "--database-url", f"{pg_url}?application_name={name}", threads=threads
    )
    w.wait_started()
    sub = load(fk.ledger, n, work_ms=5)
    wait_until(lambda: finished(pg_url) >= n // 5, 120, interval=0.05)
    terminated = 0
    for _ in range(cuts):  # each cut lands between some step's commit and what follows
        wait_until(lambda: running_steps(pg_url) > 0, 30, interval=0.005)
        terminated += len(
            query(
                pg_url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (name,),
            )
        )
    last = time.monotonic()
    accepted = sub.finish(240)
    checker.settle(accepted, ("fk",), 180)
    rep = checker.report(
        "5. DB sessions terminated x10",
        accepted,
        recovery_s=time.monotonic() - last,
        note=f"{terminated} sessions terminated",
    )
    assert rep.succeeded == n
    assert terminated > 0
    checker.assert_clean(rep, max_reexecutions=cuts * threads)


# -- 6. malformed messages -------------------------------------------------------
def _publish_raw(url: str, queue: str, bodies: list[bytes]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        for body in bodies:
            ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def _message(**fields: Any) -> dict[str, Any]:
    base = {
        "queue_name": "fk.a",
        "actor_name": "fk.a",
        "args": [],
        "kwargs": {"step_id": "nope", "run_id": "nope", "key": None},
        "options": {},
        "message_id": "m",
        "message_timestamp": 0,
    }
    return {**base, **fields}


def test_malformed_messages_are_dead_lettered(
    fk: Any,
    workers: Workers,
    pg_url: str,
    rabbitmq_url: str,
    checker: Checker,
    load: Callable[..., Submitter],
) -> None:
    n = 200
    w = workers.start(TARGET, threads=4)
    w.wait_started()
    sub = load(fk.ledger, n, work_ms=2)
    missing = _message()
    del missing["actor_name"]
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    bodies = {
        "not UTF-8": b"\xff\xfe\x00garbage",
        "not JSON": b"{this is not json",
        "missing fields": json.dumps(missing).encode(),
        "unknown stage": json.dumps(_message(actor_name="fk.nope")).encode(),
        "a pickle": b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94.",
        "deeply nested": deep,
        "oversized": json.dumps(_message(kwargs={"pad": "x" * (3 << 20)})).encode(),
    }
    began = time.monotonic()
    _publish_raw(rabbitmq_url, "fk.a", list(bodies.values()))
    accepted = sub.finish()
    checker.settle(accepted, ("fk",), 120)
    wait_until(
        lambda: int(scalar(pg_url, "SELECT count(*) FROM flowkit_dead_letters")) >= len(bodies),
        60,
        what="every malformed message dead-lettered",
    )
    reasons = [r[0] for r in query(pg_url, "SELECT reason FROM flowkit_dead_letters")]
    rep = checker.report(
        "6. malformed messages x7",
        accepted,
        recovery_s=time.monotonic() - began,
        note=f"{len(reasons)} dead-lettered with a reason",
        reasons=reasons,
    )
    assert rep.succeeded == n
    assert w.alive()
    assert len(reasons) == len(bodies), reasons
    assert all(r for r in reasons)
    checker.assert_clean(rep, max_reexecutions=0)
    # Nothing of the bodies reached the worker's log at ERROR level.
    assert "garbage" not in w.output() and "this is not json" not in w.output()


# -- 7. validation -----------------------------------------------------------------
def _queue_depth(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (0 if nobody ever declared it)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return 0
        raise
    finally:
        if conn.is_open:
            conn.close()


def test_invalid_payloads_at_submit_and_in_the_worker(
    fk: Any, workers: Workers, pg_url: str, rabbitmq_url: str, checker: Checker
) -> None:
    # At submit: refused, nothing stored, nothing enqueued.
    for bad in ({"n": -1}, {"n": "x"}, {}, "not an object"):
        with pytest.raises(flowkit.InputValidationError):
            fk.ledger.submit(bad, key="bad")
    assert int(scalar(pg_url, "SELECT count(*) FROM flowkit_runs")) == 0
    assert _queue_depth(rabbitmq_url, "fk.a") == 0
    # In the worker: stored input a newer model rejects, and a step's bad output.
    engine = fk.app.engine
    stale = engine.start(fk.ledger.compile(), {"n": "stale"}, key="stale")[0]
    bad_output = fk.ledger.submit({"n": 1, "bad_output": True}, key="bad-output").id
    good = fk.ledger.submit({"n": 2}, key="good").id
    workers.start(TARGET, threads=2).wait_started()
    accepted = {stale, bad_output, good}
    took = checker.settle(accepted, ("fk",), 60)
    attempts = dict(
        query(
            pg_url,
            "SELECT run_id || ':' || name, attempts FROM flowkit_steps WHERE status = 'failed'",
        )
    )
    rep = checker.report(
        "7. invalid payloads",
        accepted,
        recovery_s=took,
        note="4 refused at submit; 2 failed in the worker at attempt 1",
    )
    assert rep.failed == 2 and rep.succeeded == 1
    assert attempts == {f"{stale}:a": 1, f"{bad_output}:b": 1}  # no retries
    errors = dict(
        query(pg_url, "SELECT id, error->>'type' FROM flowkit_runs WHERE status = 'failed'")
    )
    assert errors == {stale: "InputValidationError", bad_output: "ValidationError"}
    checker.assert_clean(rep, max_reexecutions=0)


# -- 8. a poison step --------------------------------------------------------------
def test_a_poison_step_is_quarantined(
    fk: Any, workers: Workers, pg_url: str, checker: Checker, load: Callable[..., Submitter]
) -> None:
    n, threads = 200, 4
    sup = workers.start(TARGET, "--processes", "2", threads=threads, name="sup")
    sup.wait_started(count=2)
    began = time.monotonic()
    poisoned = fk.crashing.submit({"crash": True}, key="poison").id
    sub = load(fk.ledger, n, work_ms=5)
    accepted = sub.finish()
    checker.settle({*accepted, poisoned}, ("fk", "fk-poison"), 150)
    rep = checker.report(
        "8. poison step (os._exit)",
        {*accepted, poisoned},
        flows=("fk", "fk-poison"),
        recovery_s=time.monotonic() - began,
        note="quarantined after 3 deliveries (retries=2)",
    )
    status, error = query(
        pg_url, "SELECT status, error->>'type' FROM flowkit_runs WHERE id = %s", (poisoned,)
    )[0]
    runs_of_poison = int(
        scalar(pg_url, "SELECT count(*) FROM fk_executions WHERE run_id = %s", (poisoned,))
    )
    assert (status, error) == ("failed", "WorkerLost")
    assert runs_of_poison == 3  # retries + 1, then quarantined without running
    assert rep.succeeded == n and rep.failed == 1
    assert sup.alive()
    # The poison's 3 runs, plus steps of other runs in flight in each crashed process.
    checker.assert_clean(rep, max_reexecutions=3 + 3 * threads)
    # Three crashes in a row: the supervisor's backoff is 2 s by the third.
    wait_until(lambda: len(child_pids(sup)) == 2, 60, what="the supervisor's restart")
    assert len(child_pids(sup)) == 2  # the supervisor restarted the crashed process


# -- 9. SIGTERM during long steps ---------------------------------------------------
def test_sigterm_lets_running_steps_finish_and_returns_prefetched_messages(
    fk: Any, workers: Workers, pg_url: str, checker: Checker
) -> None:
    a = workers.start(TARGET, "--queues", "fk.slow", threads=2, shutdown_timeout=20, name="A")
    a.wait_started()
    accepted = {fk.long_steps.submit({"n": i, "work_ms": 4000}, key=f"l-{i}").id for i in range(8)}
    wait_until(lambda: running_steps(pg_url) == 2, 30, interval=0.02)
    b = workers.start(TARGET, "--queues", "fk.slow", threads=8, name="B")
    b.wait_started()
    term = time.monotonic()
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(30) == 0
    a_exit = time.time()
    stopped_in = time.monotonic() - term
    took = checker.settle(accepted, ("fk-long",), 60)
    by_pid = dict(query(pg_url, "SELECT pid, count(*) FROM fk_executions GROUP BY pid"))
    b_started = [
        r[0].timestamp()
        for r in query(
            pg_url,
            "SELECT s.started_at FROM flowkit_steps s JOIN fk_executions e "
            "ON e.key = s.run_id || ':' || s.name WHERE e.pid = %s",
            (b.pid,),
        )
    ]
    rep = checker.report(
        "9. SIGTERM during 4s steps",
        accepted,
        flows=("fk-long",),
        recovery_s=took,
        note=f"A stopped in {stopped_in:.1f}s after finishing its 2 steps",
    )
    assert rep.succeeded == 8
    assert by_pid.get(a.pid) == 2  # A finished what it was running, and took nothing new
    assert by_pid.get(b.pid) == 6
    # Prefetched messages went back at once: B started them before A had exited.
    assert max(b_started) < a_exit
    assert "returned" in a.output() and "prefetched" in a.output()
    checker.assert_clean(rep, max_reexecutions=0)


# -- 10. duplicate submits -----------------------------------------------------------
def test_duplicate_submits_from_many_threads_make_one_run(
    fk: Any, workers: Workers, pg_url: str, checker: Checker
) -> None:
    workers.start(TARGET, threads=2).wait_started()
    barrier = threading.Barrier(32)
    results: list[Any] = []
    lock = threading.Lock()

    def submit() -> None:
        barrier.wait()
        run = fk.ledger.submit({"n": 7}, key="same")
        with lock:
            results.append(run)

    threads = [threading.Thread(target=submit) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = {r.id for r in results}
    took = checker.settle(ids, ("fk",), 60)
    rep = checker.report(
        "10. 32 concurrent submits, one key",
        ids,
        recovery_s=took,
        note=f"{sum(r.created for r in results)} created, {len(results)} returned",
    )
    assert len(results) == 32 and len(ids) == 1
    assert sum(r.created for r in results) == 1
    assert rep.succeeded == 1
    checker.assert_clean(rep, max_reexecutions=0)


# -- 11. two schedulers --------------------------------------------------------------
_SCHEDULER = """
import json, os, sys, threading
from datetime import datetime, timezone
import fault_flows as f
from flowkit.scheduling import Scheduler

s = Scheduler(f.app, sweep_every=0)
ticks = [datetime(2026, 1, 1, 0, m, tzinfo=timezone.utc) for m in range(10)]
f.app.store  # connected before the start gate opens
print("ready", flush=True)
gate = sys.argv[1]
pause = threading.Event()
while not os.path.exists(gate):
    pause.wait(0.01)
for t in ticks:
    s.fire(f.ticking, t)
print(json.dumps([[r[2], r[3]] for r in s.started]), flush=True)
"""


def test_two_schedulers_fire_each_tick_once(
    fk: Any, workers: Workers, pg_url: str, checker: Checker, tmp_path: Any
) -> None:
    workers.start(TARGET, threads=4).wait_started()
    gate = tmp_path / "go"
    env = {**workers.env, "PYTHONPATH": str(faultkit.HERE)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SCHEDULER, str(gate)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        gate.touch()  # both schedulers fire the same ten ticks from here on
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    started = [tuple(x) for out in outs for x in json.loads(out.strip().splitlines()[-1])]
    ids = {rid for rid, _ in started}
    took = checker.settle(ids, ("fk-tick",), 60)
    created = [rid for rid, made in started if made]
    rep = checker.report(
        "11. two schedulers x10 ticks",
        ids,
        flows=("fk-tick",),
        recovery_s=took,
        note=f"{len(created)} runs created by {len(started)} fires in 2 processes",
    )
    assert len(started) == 20 and len(created) == 10 and len(ids) == 10
    assert rep.succeeded == 10
    checker.assert_clean(rep, max_reexecutions=0)
