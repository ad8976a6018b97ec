"""Child flows (``Workflow.call``) on the memory broker and SQLite: a step that is a flow."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

import flowkit
from flowkit.runtime.calls import child_key
from flowkit.runtime.publisher import Outgoing, RunRef
from flowkit.store import RunFilter
from flowkit.store.schema import runs as runs_table
from flowkit.testing import drain, embedded

calls: Counter[str] = Counter()
_lock = threading.Lock()


def hit(name: str) -> None:
    with _lock:
        calls[name] += 1


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    calls.clear()
    yield
    FLAKY.clear()


class Application(BaseModel):
    applicant: str
    lenders: int
    fail: list[int] = []


class Doc(BaseModel):
    lender: int
    fail: bool = False


class Processed(BaseModel):
    lender: int
    pages: int


class Go(BaseModel):
    ok: bool


# -- the child: read a lender's document, then score it -------------------------
lender_docs = flowkit.Workflow("lender-docs")


@lender_docs.step
def read_doc(doc: Doc) -> Doc:
    hit("read_doc")
    return doc


#: lenders whose documents fail to score for now (a redrive runs them again)
FLAKY: set[int] = set()


@lender_docs.step(after=read_doc, retries=0)
def score_doc(doc: Doc) -> Processed:
    hit("score_doc")
    if doc.fail or doc.lender in FLAKY:
        raise RuntimeError(f"lender {doc.lender}'s document is unreadable")
    return Processed(lender=doc.lender, pages=doc.lender * 10)


# -- a pipeline child, called once -----------------------------------------------
@flowkit.stage
def count_pages(p: Processed) -> int:
    return p.pages


counting = flowkit.Pipeline("counting", [count_pages])

# -- parents ------------------------------------------------------------------------
loans = flowkit.Workflow("loans")


@loans.step
def prepare(app: Application) -> list[Doc]:
    return [Doc(lender=i, fail=i in app.fail) for i in range(app.lenders)]


processed = loans.call(lender_docs, after=prepare, each=True)


@loans.step(after=processed)
def finalize(results: list[Processed]) -> list[int]:
    hit("finalize")
    return [r.pages for r in results]


settling = flowkit.Workflow("settling")


@settling.step(name="prepare")
def prepare2(app: Application) -> list[Doc]:
    return [Doc(lender=i, fail=i in app.fail) for i in range(app.lenders)]


settling.call(lender_docs, after="prepare", each=True, name="docs")


@settling.step(after="docs")
def settle(results: flowkit.Settled[Processed]) -> dict[str, list[int]]:
    return {"ok": [r.lender for r in results.results], "failed": [f.item for f in results.failures]}


single = flowkit.Workflow("single")


@single.step
def first(n: int) -> Doc:
    return Doc(lender=n)


one = single.call(lender_docs, after=first, name="docs")
pages = single.call(counting, after=one)

# -- a child that waits for a signal: its parent waits as a row ---------------------
gated = flowkit.Workflow("gated")


@gated.step
def hold(doc: Doc) -> Doc:
    return doc


@gated.step(after=hold, wait_for="go")
def release(doc: Doc, go: Go) -> Processed:
    return Processed(lender=doc.lender, pages=1 if go.ok else 0)


waits = flowkit.Workflow("waits")


@waits.step
def start_wait(doc: Doc) -> Doc:
    return doc


waits.call(gated, after=start_wait, name="gate")

bounded = flowkit.Workflow("bounded", timeout="1h")


@bounded.step(name="start_wait")
def start_bounded(doc: Doc) -> Doc:
    return doc


bounded.call(gated, after="start_wait", name="gate")

quick = flowkit.Workflow("quick")


@quick.step
def ping(n: int) -> int:
    return n + 1


app = flowkit.App("child-flows", flows=[loans, settling, single, waits, bounded, quick])


@pytest.fixture
def lending(tmp_path: Path) -> Iterator[flowkit.App]:
    with embedded(app, tmp_path, threads=4) as a:
        yield a


def _children(a: flowkit.App, run_id: str) -> list[dict[str, object]]:
    return a.store.calls.children(run_id)


def test_the_called_flows_join_the_app() -> None:
    assert {f.name for f in app.flows} >= {"lender-docs", "counting", "gated"}


def test_a_call_step_runs_the_child_and_feeds_its_output_on(lending: flowkit.App) -> None:
    run = single.submit(4)
    assert run.result(timeout=30) == 40
    kids = _children(lending, run.id)
    assert [(k["flow"], k["step"], k["status"]) for k in kids] == [
        ("lender-docs", "docs", "succeeded"),
        ("counting", "counting", "succeeded"),
    ]
    steps = {s.name: s for s in run.steps()}
    assert steps["docs"].output == {"lender": 4, "pages": 40}
    child = lending.store.calls.parent(str(kids[0]["id"]))
    assert child == {"id": run.id, "step": "docs", "item": None}


def test_each_true_starts_one_child_per_item_and_joins_typed_results(
    lending: flowkit.App,
) -> None:
    run = loans.submit(Application(applicant="acme", lenders=5))
    assert run.result(timeout=30) == [0, 10, 20, 30, 40]
    kids = _children(lending, run.id)
    assert sorted(k["item"] for k in kids) == [0, 1, 2, 3, 4]  # type: ignore[type-var]
    assert {k["status"] for k in kids} == {"succeeded"}
    assert calls == {"read_doc": 5, "score_doc": 5, "finalize": 1}
    page = lending.store.queries.page(RunFilter(parent=run.id), limit=50)
    assert len(page.runs) == 5 and {r.flow for r in page.runs} == {"lender-docs"}


def test_a_failed_child_fails_the_parent_step_and_run(lending: flowkit.App) -> None:
    run = loans.submit({"applicant": "acme", "lenders": 3, "fail": [1]})
    with pytest.raises(flowkit.RunFailed, match="unreadable"):
        run.result(timeout=30)
    drain(lending)
    failed = [s for s in run.steps() if s.status is flowkit.StepStatus.FAILED]
    assert [(s.name, s.item) for s in failed] == [("lender_docs", 1)]
    assert failed[0].error is not None and failed[0].error["type"] == "RunFailed"
    assert calls["finalize"] == 0


def test_a_failed_child_is_an_item_failure_of_a_settled_join(lending: flowkit.App) -> None:
    run = settling.submit({"applicant": "acme", "lenders": 4, "fail": [2]})
    assert run.result(timeout=30) == {"ok": [0, 1, 3], "failed": [2]}


def test_a_redrive_reuses_the_children_that_succeeded_and_retries_the_failed(
    lending: flowkit.App,
) -> None:
    FLAKY.add(1)
    run = loans.submit({"applicant": "acme", "lenders": 3})
    with pytest.raises(flowkit.RunFailed, match="unreadable"):
        run.result(timeout=30)
    drain(lending)
    # Items the failure skipped before their claim have no child yet.
    before = {str(k["id"]): k["status"] for k in _children(lending, run.id)}
    assert "failed" in before.values() and len(before) <= 3
    finished = {i: lending.run(i).info().finished_at for i, st in before.items()}
    FLAKY.clear()
    lending.retry(run.id)
    assert run.result(timeout=30) == [0, 10, 20]
    after = {str(k["id"]): k["status"] for k in _children(lending, run.id)}
    assert set(after) >= set(before) and len(after) == 3
    assert set(after.values()) == {"succeeded"}
    for i, st in before.items():
        if st == "succeeded":  # kept, not run again
            assert lending.run(i).info().finished_at == finished[i]


def _waiting_parent(a: flowkit.App) -> tuple[flowkit.Run, str]:
    run = waits.submit({"lender": 7})
    drain(a)
    (kid,) = _children(a, run.id)
    assert kid["status"] in ("running", "waiting")
    (step,) = [s for s in run.steps() if s.name == "gate"]
    assert step.status is flowkit.StepStatus.WAITING
    return run, str(kid["id"])


def test_the_parent_step_waits_as_a_row_and_resumes_on_the_childs_end(
    lending: flowkit.App,
) -> None:
    run, kid = _waiting_parent(lending)
    assert lending.signal(kid, "go", {"ok": True})
    assert run.result(timeout=30) == Processed(lender=7, pages=1)


def test_a_redelivered_call_step_never_starts_a_second_child(lending: flowkit.App) -> None:
    run, kid = _waiting_parent(lending)
    (step,) = [s for s in run.steps() if s.name == "gate"]
    again = [Outgoing(step.id, "gate", "default")] * 2
    lending.engine.publisher.publish(RunRef("waits", run.id), again)
    drain(lending)
    assert [k["id"] for k in _children(lending, run.id)] == [kid]
    lending.signal(kid, "go", {"ok": False})
    assert run.result(timeout=30) == Processed(lender=7, pages=0)
    lending.engine.publisher.publish(RunRef("waits", run.id), again)  # after the end too
    drain(lending)
    assert [k["id"] for k in _children(lending, run.id)] == [kid]
    with lending.store.db.transaction() as conn:
        keys = conn.execute(
            sa.select(runs_table.c.key).where(runs_table.c.parent_run_id == run.id)
        ).scalars()
        assert list(keys) == [child_key(run.id, "gate", None)]


def test_waiting_parents_hold_no_worker_thread(tmp_path: Path) -> None:
    with embedded(app, tmp_path, threads=1) as a:
        parents = [waits.submit({"lender": i}) for i in range(30)]
        drain(a)
        # One worker thread, 30 parents waiting: another flow's run still completes.
        assert quick.submit(1).result(timeout=30) == 2
        for p in parents:
            assert p.status() is not flowkit.RunStatus.SUCCEEDED
            (step,) = [s for s in p.steps() if s.name == "gate"]
            assert step.status is flowkit.StepStatus.WAITING
        for p in parents:
            (kid,) = _children(a, p.id)
            a.signal(str(kid["id"]), "go", {"ok": True})
        for p in parents:
            assert p.result(timeout=30).pages == 1


def test_cancelling_the_parent_cancels_its_live_children(lending: flowkit.App) -> None:
    run, kid = _waiting_parent(lending)
    assert lending.cancel(run.id)
    assert lending.run(kid).status() is flowkit.RunStatus.CANCELLED
    assert run.status() is flowkit.RunStatus.CANCELLED


def test_the_parents_deadline_bounds_its_children(lending: flowkit.App) -> None:
    run = bounded.submit({"lender": 3})  # no drain: its deadline timers stay in the broker
    pause = threading.Event()
    for _ in range(300):
        kids = _children(lending, run.id)
        if kids:
            break
        pause.wait(0.05)  # a poll with a bound, not a synchronisation
    (child,) = kids
    kid = str(child["id"])
    with lending.store.db.transaction() as conn:
        rows = conn.execute(
            sa.select(runs_table.c.id, runs_table.c.deadline_at).where(
                runs_table.c.id.in_([run.id, kid])
            )
        ).all()
    deadlines = {r[0]: r[1] for r in rows}
    assert deadlines[kid] is not None and deadlines[kid] <= deadlines[run.id]


def test_the_sweep_wakes_a_step_whose_childs_end_did_not(lending: flowkit.App) -> None:
    run, kid = _waiting_parent(lending)
    # The child ends but its process "dies" before waking the parent step.
    lending.engine.children.called = frozenset()
    lending.signal(kid, "go", {"ok": True})
    drain(lending)
    assert lending.run(kid).status() is flowkit.RunStatus.SUCCEEDED
    assert run.status() is not flowkit.RunStatus.SUCCEEDED
    (step,) = [s for s in run.steps() if s.name == "gate"]
    assert step.status is flowkit.StepStatus.WAITING
    assert lending.store.calls.stuck() == [kid]
    lending.engine.children.called = frozenset({"gated"})
    assert lending.engine.children.sweep() <= 1  # (or the worker's own sweep got there first)
    assert run.result(timeout=30) == Processed(lender=7, pages=1)


# -- build-time checks ------------------------------------------------------------------


def test_the_edge_into_a_call_is_type_checked() -> None:
    wf = flowkit.Workflow("bad-in")

    @wf.step
    def make(n: int) -> int:
        return n

    wf.call(lender_docs, after=make)
    with pytest.raises(flowkit.FlowDefinitionError, match="returns int but 'lender_docs' takes"):
        wf.validate()


def test_the_edge_out_of_a_call_is_type_checked() -> None:
    wf = flowkit.Workflow("bad-out")
    docs = wf.call(lender_docs)

    @wf.step(after=docs)
    def use(n: int) -> int:
        return n

    with pytest.raises(flowkit.FlowDefinitionError, match="'lender_docs' returns Processed"):
        wf.validate()


def test_a_join_after_a_fanned_out_call_takes_a_list_of_the_childs_output() -> None:
    wf = flowkit.Workflow("bad-join")

    @wf.step
    def many(n: int) -> list[Doc]:
        return []

    docs = wf.call(lender_docs, after=many, each=True)

    @wf.step(after=docs)
    def join(results: list[Doc]) -> int:
        return 0

    with pytest.raises(flowkit.FlowDefinitionError, match="joins the items"):
        wf.validate()


def test_a_call_takes_a_flow_and_one_parent() -> None:
    wf = flowkit.Workflow("w")
    with pytest.raises(flowkit.FlowDefinitionError, match="Pipeline or Workflow"):
        wf.call(count_pages)  # type: ignore[arg-type]
    with pytest.raises(flowkit.FlowDefinitionError, match="cannot call itself"):
        wf.call(wf)
    with pytest.raises(flowkit.FlowDefinitionError, match="one parent"):
        wf.call(lender_docs, after=["a", "b"])


def test_a_call_stage_is_not_called_directly() -> None:
    with pytest.raises(flowkit.FlowDefinitionError, match="child run"):
        processed(Doc(lender=1))
