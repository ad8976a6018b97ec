"""The exception example on RabbitMQ + PostgreSQL, one ``flowkit worker`` process per stage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from helpers import (  # noqa: F401 - fixtures
    EXAMPLE_APP,
    EXAMPLE_DIR,
    EXAMPLE_STAGES,
    ROOT,
    Workers,
    check_linear_runs,
    env_fixture,
    load_example,
    query,
    wait_for_runs,
    workers_fixture,
)

pytestmark = pytest.mark.integration

TARGET = f"{EXAMPLE_APP}:pipeline"
RUNS = 1000


@pytest.fixture
def example(pg_url: str, rabbitmq_url: str) -> Iterator[Any]:
    """The example's pipeline, configured for this test's services (opened lazily)."""
    target = load_example()
    target.app.configure(broker_url=rabbitmq_url, database_url=pg_url, embedded_worker=False)
    try:
        yield target.flow
    finally:
        target.app.close()


def test_1000_exceptions_with_one_worker_process_per_stage(
    example: Any, workers: Workers, pg_url: str, env: dict[str, str], cli: Any
) -> None:
    import sample_data  # on sys.path once the example is loaded

    pipeline = example
    # Six processes race to create the schema of the empty database at start.
    procs = workers.start_stages(TARGET, EXAMPLE_STAGES, threads=4)
    for stage, proc in procs.items():
        (line,) = proc.start_lines()
        assert line.group("flows") == "exceptions"
        assert line.group("queues") == f"exceptions.{stage}"
        assert line.group("threads") == "4"
    # The queues' names are fixed and the vhost serves the whole session.
    pipeline.app.broker.flush_all()

    started = time.monotonic()

    # Four submitting threads, as a web server's request threads would submit.
    def submit(numbered: tuple[int, Any]) -> Any:
        i, exc = numbered
        return pipeline.submit(exc, key=f"it-{i}:{exc.tenant_id}:{exc.exception_id}")

    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(submit, enumerate(sample_data.generate(RUNS, seed=7))))
    submitted = time.monotonic() - started
    assert all(r.created for r in runs)

    counts = wait_for_runs(pg_url, "exceptions", RUNS, timeout=150)
    elapsed = time.monotonic() - started
    assert counts == {"succeeded": RUNS}, counts
    assert all(p.alive() for p in procs.values()), "a worker process died"

    audit = check_linear_runs(pg_url, "exceptions", EXAMPLE_STAGES)
    assert audit.runs == RUNS
    assert audit.rows == RUNS * len(EXAMPLE_STAGES)
    # Runs stopped by triage reached intake and triage; the others every stage.
    per_run = query(
        pg_url,
        "SELECT r.stop_reason IS NOT NULL, "
        "array_agg(s.name ORDER BY s.name) FILTER (WHERE s.status = 'succeeded') "
        "FROM flowkit_runs r JOIN flowkit_steps s ON s.run_id = r.id GROUP BY r.id",
    )
    stopped = [names for was_stopped, names in per_run if was_stopped]
    full = [names for was_stopped, names in per_run if not was_stopped]
    assert stopped and full
    assert all(names == ["intake", "triage"] for names in stopped)
    assert all(names == sorted(EXAMPLE_STAGES) for names in full)
    # The result of a full run is the feedback stage's record.
    finished = [r for r in runs[:50] if r.info().stop_reason is None]
    assert finished
    assert finished[0].result(timeout=5).outcome in {
        "awaiting_approval",
        "ticketed",
        "auto_remediated",
    }

    listed = cli(
        "runs", "list", "--flow", "exceptions", "--status", "succeeded", "--limit", "2000",
        "--json", env=env,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == RUNS
    assert {r["id"] for r in rows} == {r.id for r in runs}
    assert {r["status"] for r in rows} == {"succeeded"}
    # `flowkit runs show --json`: the timeline of a stopped and of a full run.
    stopped_id = query(pg_url, "SELECT id FROM flowkit_runs WHERE stop_reason IS NOT NULL")[0][0]
    full_id = query(pg_url, "SELECT id FROM flowkit_runs WHERE stop_reason IS NULL")[0][0]
    for run_id, want in (
        (stopped_id, ["succeeded"] * 2 + ["skipped"] * 4),
        (full_id, ["succeeded"] * 6),
    ):
        shown = cli("runs", "show", run_id, "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert doc["status"] == "succeeded"
        assert [s["name"] for s in doc["steps"]] == list(EXAMPLE_STAGES)
        assert [s["status"] for s in doc["steps"]] == want
    assert "guest:guest" not in workers.logs() + listed.stdout + listed.stderr
    print(
        f"\n{RUNS} runs ({len(full)} full, {len(stopped)} stopped by triage): submitted in "
        f"{submitted:.1f}s, all succeeded after {elapsed:.1f}s ({RUNS / elapsed:.0f} runs/s, "
        f"{audit.rows / elapsed:.0f} steps/s); steps with attempts > 1: {audit.retried}"
    )


def test_run_py_waits_for_stage_workers_on_rabbitmq(
    example: Any, workers: Workers, pg_url: str, env: dict[str, str]
) -> None:
    """``python examples/exceptions/run.py`` submits, then waits for `flowkit worker` processes."""
    workers.start_stages(TARGET, EXAMPLE_STAGES, threads=4)
    example.app.broker.flush_all()
    began = time.monotonic()
    res = subprocess.run(
        [sys.executable, str(EXAMPLE_DIR / "run.py"), "--count", "200", "--timeout", "90"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=120,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "submitted 200 runs; waiting for `flowkit worker` processes" in res.stderr
    assert re.search(r"submitted\s+200\b", res.stdout), res.stdout
    assert re.search(r"failed\s+0\b", res.stdout), res.stdout
    assert "unfinished" not in res.stdout
    assert "guest:***@" in res.stdout and "guest:guest" not in out
    assert wait_for_runs(pg_url, "exceptions", 200, timeout=10) == {"succeeded": 200}
    check_linear_runs(pg_url, "exceptions", EXAMPLE_STAGES)
    print(f"\nrun.py --count 200: exit 0 in {time.monotonic() - began:.1f}s")
