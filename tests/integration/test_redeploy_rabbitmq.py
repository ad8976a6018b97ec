"""A redeploy on RabbitMQ + PostgreSQL with real `flowkit worker` processes (docs/deploys.md).

50 runs wait for their signal under v1; the workers are replaced by v2's, where the wait
step is renamed and the last step's input type changed. The 50 are listed stranded with
their reason, no worker logs an error (let alone a loop of them), and `flowkit retry
--stranded --from approve` moves them onto v2, where their signals complete them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import redeploy_v1 as v1  # noqa: E402
import redeploy_v2 as v2  # noqa: E402
from helpers import (  # noqa: E402
    Workers,
    bound_app,
    run_counts,
    scalar,
    wait_for_runs,
    wait_until,
    worker_env,
)

V1 = f"{HERE / 'redeploy_v1.py'}:app"
V2 = f"{HERE / 'redeploy_v2.py'}:app"
FLOW = "rd-expenses"
N = 50


@pytest.fixture
def workers(pg_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[Workers]:
    fleet = Workers(worker_env(rabbitmq_url, pg_url), tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def stranded(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM flowkit_runs WHERE stranded IS NOT NULL"))


def test_runs_stranded_by_a_redeploy_are_listed_then_retried_onto_it(
    workers: Workers, cli: Any, pg_url: str, rabbitmq_url: str
) -> None:
    env = worker_env(rabbitmq_url, pg_url)
    with bound_app(v1.app, pg_url, rabbitmq_url):
        runs = v1.expenses.submit_many([{"id": i} for i in range(N)])
        first = workers.start(V1, threads=4, name="v1")
        first.wait_started()
        wait_until(lambda: run_counts(pg_url, FLOW).get("waiting") == N, 60, what="50 runs waiting")
        ids = sorted(r.id for r in runs)
    workers.stop_all()

    # Before the deploy: what v2 would strand, and why (nothing is marked).
    diff = cli("flows", "diff", V2, "--json", env=env)
    assert diff.returncode == 1, diff.stderr
    (doc,) = [json.loads(line) for line in diff.stdout.splitlines()]
    assert doc["fingerprints"] == {v1.expenses.compile().fingerprint: N}
    assert sorted(s["run_id"] for s in doc["stranded"]) == ids
    assert {s["reason"] for s in doc["stranded"]} == {"step `review` no longer exists"}
    assert stranded(pg_url) == 0

    second = workers.start(V2, threads=4, name="v2")
    second.wait_started()
    wait_until(lambda: stranded(pg_url) == N, 30, what="50 runs stranded")
    listed = cli("runs", "list", "--stranded", "--json", "--limit", "100", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["id"] for r in rows) == ids
    assert {(r["status"], r["stranded"]) for r in rows} == {
        ("waiting", "step `review` no longer exists")
    }
    # One line about them, no error and no loop: the worker is quiet.
    assert workers.grep(r"ERROR|Traceback") == []
    assert len(workers.grep(r"stranded")) == 1, workers.grep(r"stranded")
    assert scalar(pg_url, "SELECT count(*) FROM flowkit_dead_letters") == 0

    preview = cli("retry", ids[0], "--from", "approve", "--dry-run", "--app", V2, env=env)
    assert preview.returncode == 0, preview.stderr
    assert "would re-run approve, finish; reuses prepare; drops review" in preview.stdout
    done = cli("retry", "--stranded", "--flow", FLOW, "--from", "approve", "--app", V2, env=env)
    assert done.returncode == 0, done.stderr
    assert f"retried {N} of {N} stranded run(s)" in done.stdout
    assert stranded(pg_url) == 0

    with bound_app(v2.app, pg_url, rabbitmq_url) as app:
        for run_id in ids:
            app.run(run_id).signal("approval", {"ok": True})
        counts = wait_for_runs(pg_url, FLOW, N, timeout=60)
        assert counts == {"succeeded": N}, counts
        results = {app.run(i).result(timeout=5) for i in ids}
    assert results == {f"{i}:True:{i * 10}" for i in range(N)}
    assert workers.grep(r"ERROR|Traceback") == []


def test_a_message_for_a_renamed_step_strands_its_run_during_a_rolling_deploy(
    workers: Workers, cli: Any, pg_url: str, rabbitmq_url: str
) -> None:
    env = worker_env(rabbitmq_url, pg_url)
    new = workers.start(f"{HERE / 'redeploy_v2.py'}:pipeline_app", "--queues", "rd.enrich")
    old = workers.start(f"{HERE / 'redeploy_v1.py'}:pipeline_app", "--queues", "rd.load")
    new.wait_started()
    old.wait_started()
    with bound_app(v1.pipeline_app, pg_url, rabbitmq_url):
        # submitted after the new worker's start: only the message of `enrich` tells
        runs = v1.pipeline.submit_many([{"id": i} for i in range(10)])
        wait_until(lambda: stranded(pg_url) == 10, 30, what="10 runs stranded")
    listed = cli("runs", "list", "--stranded", "--json", env=env)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(r.id for r in runs)
    assert {r["stranded"] for r in rows} == {"step `enrich` no longer exists"}
    # no dead letter for them, no error in any worker
    assert scalar(pg_url, "SELECT count(*) FROM flowkit_dead_letters") == 0
    assert workers.grep(r"ERROR|Traceback") == []
    done = cli(
        "retry",
        "--stranded",
        "--from",
        "enhance",
        "--app",
        f"{HERE / 'redeploy_v2.py'}:pipeline_app",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    counts = wait_for_runs(pg_url, "rd-pipeline", 10, timeout=60)
    assert counts == {"succeeded": 10}, counts
