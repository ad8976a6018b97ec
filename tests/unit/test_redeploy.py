"""Runs that survive a redeploy (docs/deploys.md) on the embedded default: fingerprints,
stranded runs with their reasons, `retry --from` onto the new definition, `flows diff`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import deploy_v1 as v1
import deploy_v2 as v2
import dramatiq
import pytest
from pydantic import BaseModel

import flowkit
from flowkit.cli.main import main
from flowkit.fingerprints import describe, fingerprint
from flowkit.runtime.publisher import Outgoing, RunRef
from flowkit.testing import embedded, wait_for_status

HERE = Path(__file__).parent
V2_APP = f"{HERE / 'deploy_v2.py'}:app"


# -- fingerprints ----------------------------------------------------------------
class Num(BaseModel):
    n: int


def test_a_fingerprint_ignores_docstrings_and_descriptions() -> None:
    assert fingerprint(v1.described.compile()) == fingerprint(v2.described.compile())
    assert "description" not in json.dumps(describe(v1.described.compile()))


def test_a_fingerprint_changes_with_a_rename_a_type_or_an_edge() -> None:
    assert fingerprint(v1.expenses.compile()) != fingerprint(v2.expenses.compile())
    assert fingerprint(v1.scoring.compile()) != fingerprint(v2.scoring.compile())

    def flow(second_after_first: bool, text: bool = False) -> flowkit.Workflow:
        wf = flowkit.Workflow("fp")

        @wf.step
        def first(x: Num) -> Num:
            return x

        if text:

            @wf.step(after=first if second_after_first else None)
            def second(x: Num) -> str:
                return str(x.n)

        else:

            @wf.step(after=first if second_after_first else None)
            def second(x: Num) -> int:  # type: ignore[misc]
                return x.n

        return wf

    base = fingerprint(flow(True).compile())
    assert base == fingerprint(flow(True).compile())  # stable
    assert base != fingerprint(flow(False).compile())  # an edge
    assert base != fingerprint(flow(True, text=True).compile())  # an output type


# -- the redeploy itself ---------------------------------------------------------
@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[tuple[flowkit.App, dict[str, str]]]:
    """Runs started under v1 (one waiting for its signal, one stalled before `score`),
    then v2's worker started on the same database."""
    with embedded(v1.app, tmp_path) as a:
        a.configure(embedded_worker=False)
        a.start_worker(queues=["default"])  # never `deploy.slow`: score stays queued
        waiting = v1.expenses.submit({"id": 1})
        stalled = v1.scoring.submit("abc")
        wait_for_status(waiting, flowkit.RunStatus.WAITING)
        wait_until(lambda: any(s.name == "score" for s in stalled.steps()))
        ids = {"waiting": waiting.id, "stalled": stalled.id}
    with embedded(v2.app, tmp_path) as b:
        b.configure(embedded_worker=False)
        b.start_worker()  # checks the live runs of v1 against v2
        yield b, ids


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline, pause = time.monotonic() + timeout, threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        pause.wait(0.01)


def reasons(app: flowkit.App) -> dict[str, str]:
    return {r.id: r.reason for r in app.store.strands.stranded()}


def test_a_worker_of_the_new_definition_strands_what_it_cannot_go_on_with(deployed: Any) -> None:
    app, ids = deployed
    assert reasons(app) == {
        ids["waiting"]: "step `review` no longer exists",
        ids["stalled"]: "input of `score` no longer validates: 1 validation error(s): "
        "weight: Field required",
    }
    # still live, the step where it was, nothing failed and nothing dead-lettered
    assert app.run(ids["waiting"]).status() is flowkit.RunStatus.WAITING
    assert app.run(ids["stalled"]).status() is flowkit.RunStatus.RUNNING
    assert app.store.dead_letters.newest() == []


def test_a_compatible_run_goes_on(tmp_path: Path) -> None:
    with embedded(v1.app, tmp_path) as a:
        a.configure(embedded_worker=False)
        a.start_worker(queues=["default"])
        run = v1.scoring.submit("")  # intake, then score queued under v1
        wait_until(lambda: any(s.name == "score" for s in run.steps()))
        run_id = run.id
    # v2 with `score` as v1 had it, but intake's output changed: score's row still validates
    relaxed = flowkit.Workflow("deploy-scoring")

    @relaxed.step
    def intake(name: str) -> v1.Item:
        return v1.Item(name=name + "!")

    @relaxed.step(after=intake, queue="deploy.slow")
    def score(item: v1.Item) -> str:  # another output type: another fingerprint
        return str(len(item.name) + 100)

    with embedded(flowkit.App("deploy-relaxed", flows=[relaxed]), tmp_path) as b:
        b.start_worker()
        assert reasons(b) == {}
        b.engine.publisher.publish(
            RunRef(relaxed.name, run_id), [_outgoing(b, run_id, "score", "deploy.slow")]
        )
        assert relaxed.compile().fingerprint != v1.scoring.compile().fingerprint
        assert b.run(run_id).result(timeout=10) == "100"


def _outgoing(app: flowkit.App, run_id: str, name: str, queue: str) -> Outgoing:
    (step,) = [s for s in app.run(run_id).steps() if s.name == name]
    return Outgoing(step.id, name, queue)


def test_a_message_for_a_renamed_step_strands_its_run_not_a_dead_letter(deployed: Any) -> None:
    app, ids = deployed
    run_id = ids["waiting"]
    with app.store.db.transaction() as conn:
        conn.exec_driver_sql("UPDATE flowkit_runs SET stranded = NULL WHERE id = ?", (run_id,))
    (review,) = [s for s in app.run(run_id).steps() if s.name == "review"]
    app.broker.enqueue(
        dramatiq.Message(
            queue_name="default",
            actor_name="deploy-expenses.review",
            args=(),
            kwargs={"step_id": review.id, "run_id": run_id},
            options={},
        )
    )
    wait_until(lambda: run_id in reasons(app))
    assert reasons(app)[run_id] == "step `review` no longer exists"
    assert app.store.dead_letters.newest() == []


def test_an_input_that_no_longer_validates_strands_not_fails(deployed: Any) -> None:
    app, ids = deployed
    run_id = ids["stalled"]
    with app.store.db.transaction() as conn:
        conn.exec_driver_sql("UPDATE flowkit_runs SET stranded = NULL WHERE id = ?", (run_id,))
    app.engine.publisher.publish(
        RunRef("deploy-scoring", run_id), [_outgoing(app, run_id, "score", "deploy.slow")]
    )
    wait_until(lambda: run_id in reasons(app))
    assert reasons(app)[run_id].startswith("input of `score` no longer validates")
    assert app.run(run_id).status() is flowkit.RunStatus.RUNNING  # not failed
    assert app.store.dead_letters.newest() == []


def test_retry_from_a_step_moves_a_stranded_run_onto_the_new_definition(deployed: Any) -> None:
    app, ids = deployed
    run = app.run(ids["waiting"])
    with pytest.raises(flowkit.RunStateError, match=r"is stranded .* \(--from STEP\)"):
        run.retry()
    before = [(s.id, s.status) for s in run.steps()]
    preview = run.retry_preview(from_step="approve")
    assert preview == flowkit.RetryPreview(
        run_id=run.id,
        start="approve",
        rerun=("approve", "finish"),
        reused=("prepare",),
        stranded="step `review` no longer exists",
        dropped=("review",),
    )
    assert [(s.id, s.status) for s in run.steps()] == before  # a preview changes nothing
    assert run.retry(from_step="approve") == ["approve"]
    assert reasons(app) == {ids["stalled"]: reasons(app)[ids["stalled"]]}
    wait_for_status(run, flowkit.RunStatus.WAITING)
    assert run.signal("approval", {"ok": True}) is True
    assert run.result(timeout=10) == "1:True:10"
    assert "review" not in {s.name for s in run.steps()}


def test_retry_refuses_a_start_whose_input_would_not_validate(deployed: Any) -> None:
    app, ids = deployed
    run = app.run(ids["stalled"])
    with pytest.raises(flowkit.RunStateError, match="input of `score` no longer validates"):
        run.retry(from_step="score")
    assert run.retry(from_step="intake") == ["intake"]
    assert run.result(timeout=10) == 3


def test_the_cli_lists_stranded_runs_and_shows_the_diff(
    deployed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    app, ids = deployed
    url = app.settings.database_url
    assert main(["runs", "list", "--stranded", "--json", "--database-url", url]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["id"]: r["stranded"] for r in rows} == reasons(app)
    assert {r["fingerprint"] for r in rows} == {
        v1.expenses.compile().fingerprint,
        v1.scoring.compile().fingerprint,
    }
    assert main(["runs", "list", "--stranded", "--database-url", url]) == 0
    assert "step `review` no longer exists" in capsys.readouterr().out

    assert main(["flows", "diff", V2_APP, "--database-url", url]) == 1
    out = capsys.readouterr().out
    assert f"{ids['waiting']}  step `review` no longer exists" not in out  # marked already
    assert "2 run(s) stranded already" not in out and "1 run(s) stranded already" in out
    app.retry(ids["waiting"], from_step="approve")  # moved onto v2: nothing to show
    with app.store.db.transaction() as conn:  # a v1 run not checked yet (a rolling deploy)
        conn.exec_driver_sql("UPDATE flowkit_runs SET stranded = NULL")
    assert main(["flows", "diff", V2_APP, "--database-url", url, "--json"]) == 1
    docs = {d["flow"]: d for d in map(json.loads, capsys.readouterr().out.splitlines())}
    assert docs["deploy-expenses"]["stranded"] == []
    assert docs["deploy-expenses"]["fingerprint"] == v2.expenses.compile().fingerprint
    assert [s["run_id"] for s in docs["deploy-scoring"]["stranded"]] == [ids["stalled"]]
    assert main(["flows", "diff", V2_APP, "--database-url", url]) == 1
    out = capsys.readouterr().out
    assert "1 would be stranded" in out and "input of `score` no longer validates" in out
    assert reasons(app) == {}  # a diff marks nothing

    assert main(["retry", "--stranded", "--app", V2_APP, "--database-url", url]) == 2
    assert "--stranded needs --from STEP" in capsys.readouterr().err


def test_the_docs_example_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(HERE.parents[1] / "examples" / "redeploy" / "run.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "v2 would strand 3 run(s): step `review` no longer exists" in done.stdout
    assert done.stdout.count("re-runs approve, book; reuses check") == 3
    assert "expense 3: 300 booked" in done.stdout


def test_the_run_page_shows_why_a_run_is_stranded(deployed: Any) -> None:
    from starlette.testclient import TestClient

    from flowkit.dashboard import create_app

    app, ids = deployed
    page = TestClient(create_app(app, token="redeploy-test-token-0123")).get(
        f"/runs/{ids['waiting']}"
    )
    assert page.status_code == 200
    assert '<dd id="run-stranded">step `review` no longer exists' in page.text
