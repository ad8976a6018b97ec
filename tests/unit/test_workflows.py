"""Workflows: DAG edges, fan-out and joins, settled joins, events, build-time checks."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import flowkit
from flowkit.runtime.publisher import Outgoing, RunRef
from flowkit.testing import drain, embedded

calls: Counter[str] = Counter()
_lock = threading.Lock()


def hit(name: str) -> None:
    with _lock:
        calls[name] += 1


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


class Application(BaseModel):
    applicant: str
    lenders: int
    fail_items: list[int] = []


class LenderRef(BaseModel):
    lender_id: int
    fail: bool = False


class Match(BaseModel):
    lender_id: int
    score: float


class Ranking(BaseModel):
    applicant: str
    best: list[int]
    count: int


# -- loan matching: prepare -> match (each) -> finalize ------------------------
matching = flowkit.Workflow("matching", on="loan:application:uploaded")


@matching.step
def prepare(app: Application) -> list[LenderRef]:
    hit("prepare")
    return [LenderRef(lender_id=i, fail=i in app.fail_items) for i in range(app.lenders)]


@matching.step(after=prepare, each=True, retries=1, min_backoff="1ms", max_backoff="2ms")
def match(lender: LenderRef, ctx: flowkit.Context) -> Match:
    hit("match")
    if lender.fail:
        raise RuntimeError(f"lender {lender.lender_id} is down")
    assert ctx.item == lender.lender_id
    return Match(lender_id=lender.lender_id, score=lender.lender_id * 1.5)


@matching.step(after=match)
def finalize(matches: list[Match]) -> Ranking:
    hit("finalize")
    ordered = sorted(matches, key=lambda m: -m.score)
    return Ranking(applicant="?", best=[m.lender_id for m in ordered[:3]], count=len(matches))


# -- the same with a settled join ----------------------------------------------
settling = flowkit.Workflow("settling", on="loan:application:uploaded")


@settling.step(name="prepare")
def prepare2(app: Application) -> list[LenderRef]:
    return [LenderRef(lender_id=i, fail=i in app.fail_items) for i in range(app.lenders)]


@settling.step(after="prepare", each=True, name="match", retries=0)
def match2(lender: LenderRef) -> Match:
    if lender.fail:
        raise RuntimeError(f"lender {lender.lender_id} is down")
    return Match(lender_id=lender.lender_id, score=1.0)


@settling.step(after="match", name="finalize")
def finalize2(matches: flowkit.Settled[Match]) -> dict[str, list[int]]:
    return {
        "ok": [m.lender_id for m in matches.results],
        "failed": [f.item for f in matches.failures],
    }


# -- a diamond with a several-parent step and two sinks ------------------------
diamond = flowkit.Workflow("diamond")


@diamond.step
def start(n: int) -> int:
    return n + 1


@diamond.step(after=start)
def double(n: int) -> int:
    return n * 2


@diamond.step(after=start)
def square(n: int) -> int:
    return n * n


@diamond.step(after=[double, square])
def combine(double: int, square: int, ctx: flowkit.Context) -> str:
    return f"{double}+{square}"


@diamond.step(after=start)
def side(n: int) -> int:
    if n == 100:
        return flowkit.Stop(output="stopped at 100", reason="too big")  # type: ignore[return-value]
    return -n


app = flowkit.App("lending", flows=[matching, settling, diamond])


@pytest.fixture
def lending(tmp_path: Path) -> Iterator[flowkit.App]:
    with embedded(app, tmp_path, threads=8) as a:
        yield a


def test_fan_out_then_join_with_typed_results_in_order(lending: flowkit.App) -> None:
    run = matching.submit(Application(applicant="acme", lenders=50))
    ranking = run.result(timeout=30)
    assert ranking == Ranking(applicant="?", best=[49, 48, 47], count=50)
    steps = run.steps()
    items = [s for s in steps if s.name == "match"]
    assert sorted(s.item for s in items) == list(range(50))  # type: ignore[type-var]
    assert all(s.status is flowkit.StepStatus.SUCCEEDED for s in items)
    assert calls == {"prepare": 1, "match": 50, "finalize": 1}
    (join,) = [s for s in steps if s.name == "finalize"]
    assert [m["lender_id"] for m in join.input] == list(range(50))


def test_an_empty_fan_out_runs_the_join_with_no_items(lending: flowkit.App) -> None:
    run = matching.submit({"applicant": "acme", "lenders": 0})
    assert run.result(timeout=10).count == 0
    assert calls["finalize"] == 1


def test_a_failed_item_fails_the_run_and_skips_what_is_left(lending: flowkit.App) -> None:
    run = matching.submit({"applicant": "acme", "lenders": 20, "fail_items": [3]})
    with pytest.raises(flowkit.RunFailed, match="lender 3 is down"):
        run.result(timeout=30)
    drain(lending)
    steps = run.steps()
    (join,) = [s for s in steps if s.name == "finalize"]
    assert join.status is flowkit.StepStatus.SKIPPED
    assert calls["finalize"] == 0
    failed = [s for s in steps if s.status is flowkit.StepStatus.FAILED]
    assert [(s.name, s.item, s.attempts) for s in failed] == [("match", 3, 2)]


def test_a_settled_join_receives_successes_and_failures(lending: flowkit.App) -> None:
    run = settling.submit({"applicant": "acme", "lenders": 6, "fail_items": [1, 4]})
    assert run.result(timeout=30) == {"ok": [0, 2, 3, 5], "failed": [1, 4]}
    assert run.status() is flowkit.RunStatus.SUCCEEDED


def test_a_step_with_several_parents_gets_each_output_by_name(lending: flowkit.App) -> None:
    run = diamond.submit(2)
    assert run.result(timeout=10) == {"combine": "6+9", "side": -3}
    names = Counter(s.name for s in run.steps())
    assert names == {"start": 1, "double": 1, "square": 1, "combine": 1, "side": 1}


def test_stop_in_a_workflow_skips_what_is_left(lending: flowkit.App) -> None:
    run = diamond.submit(99)
    assert run.result(timeout=10) == "stopped at 100"
    assert run.info().stop_reason == "too big"
    drain(lending)
    statuses = {s.name: s.status for s in run.steps()}
    assert statuses["side"] is flowkit.StepStatus.SUCCEEDED
    assert run.status() is flowkit.RunStatus.SUCCEEDED


def test_a_duplicate_item_message_never_runs_the_join_twice(tmp_path: Path) -> None:
    with embedded(app, tmp_path) as a:
        a.configure(embedded_worker=False)
        run = matching.submit({"applicant": "acme", "lenders": 5})
        a.start_worker()
        run.result(timeout=30)
        items = [s for s in run.steps() if s.name == "match"]
        # Deliver every item again, as a broker redelivery would.
        a.engine.publisher.publish(
            RunRef("matching", run.id), [Outgoing(s.id, "match", "default") for s in items]
        )
        drain(a)
        assert Counter(s.name for s in run.steps())["finalize"] == 1
    assert calls["finalize"] == 1
    assert calls["match"] == 5


def test_many_concurrent_item_completions_open_the_join_exactly_once(
    lending: flowkit.App,
) -> None:
    runs = [matching.submit({"applicant": f"a{i}", "lenders": 40}) for i in range(5)]
    for r in runs:
        assert r.result(timeout=60).count == 40
    assert calls["finalize"] == 5
    assert calls["match"] == 200


def test_emit_starts_every_subscribed_workflow(lending: flowkit.App) -> None:
    runs = lending.emit("loan:application:uploaded", {"applicant": "x", "lenders": 2})
    assert sorted(r.flow for r in runs) == ["matching", "settling"]
    for r in runs:
        r.wait(timeout=30)
    assert calls["prepare"] == 1


def test_emit_validates_for_every_subscriber_before_starting_any(lending: flowkit.App) -> None:
    with pytest.raises(flowkit.InputValidationError):
        lending.emit("loan:application:uploaded", {"applicant": "x"})
    assert lending.runs() == []


def test_an_event_nobody_subscribes_to_is_reported(lending: flowkit.App) -> None:
    with pytest.raises(flowkit.EventNotSubscribed, match="loan:application:uploaded"):
        lending.emit("lender:document:uploaded", {})


def test_emit_with_a_key_is_idempotent_per_flow(lending: flowkit.App) -> None:
    first = lending.emit("loan:application:uploaded", {"applicant": "x", "lenders": 1}, key="k")
    again = lending.emit("loan:application:uploaded", {"applicant": "x", "lenders": 1}, key="k")
    assert [r.id for r in first] == [r.id for r in again]
    assert not any(r.created for r in again)


# -- build-time checks ----------------------------------------------------------


def _wf() -> flowkit.Workflow:
    return flowkit.Workflow("w")


def test_unknown_parent_is_named() -> None:
    wf = _wf()

    @wf.step(after="ghost")
    def a(x: int) -> int:
        return x

    with pytest.raises(flowkit.FlowDefinitionError, match="runs after 'ghost'"):
        wf.validate()


def test_a_cycle_is_named() -> None:
    wf = _wf()

    @wf.step
    def root(x: int) -> int:
        return x

    @wf.step(after=["root", "b"])
    def a(root: int, b: int) -> int:
        return root

    @wf.step(after="a")
    def b(x: int) -> int:
        return x

    with pytest.raises(flowkit.FlowDefinitionError, match=r"cycle: (a -> b -> a|b -> a -> b)"):
        wf.validate()


def test_an_edge_type_mismatch_names_both_steps() -> None:
    wf = _wf()

    @wf.step
    def a(x: int) -> str:
        return str(x)

    @wf.step(after=a)
    def b(x: int) -> int:
        return x

    with pytest.raises(flowkit.FlowDefinitionError, match="'a' returns str but 'b' takes int"):
        flowkit.App("t", flows=[wf])


def test_each_needs_a_list_of_the_item_type() -> None:
    wf = _wf()

    @wf.step
    def a(x: int) -> int:
        return x

    @wf.step(after=a, each=True)
    def b(x: int) -> int:
        return x

    with pytest.raises(flowkit.FlowDefinitionError, match="has each=True but 'a' returns int"):
        wf.validate()

    wf2 = flowkit.Workflow("w2")

    @wf2.step
    def a2(x: int) -> list[str]:
        return []

    @wf2.step(after=a2, each=True)
    def b2(x: int) -> int:
        return x

    with pytest.raises(flowkit.FlowDefinitionError, match="returns a list of str but 'b2' takes"):
        wf2.validate()


def test_a_join_needs_a_list_of_the_item_output() -> None:
    wf = _wf()

    @wf.step
    def a(x: int) -> list[int]:
        return [x]

    @wf.step(after=a, each=True)
    def b(x: int) -> str:
        return str(x)

    @wf.step(after=b)
    def c(xs: list[int]) -> int:
        return 0

    with pytest.raises(flowkit.FlowDefinitionError, match=r"takes list\[str\]"):
        wf.validate()


def test_several_parents_need_parameters_named_after_them() -> None:
    wf = _wf()

    @wf.step
    def a(x: int) -> int:
        return x

    @wf.step(after=a)
    def b(x: int) -> int:
        return x

    with pytest.raises(flowkit.FlowDefinitionError, match="name one parameter after each parent"):

        @wf.step(after=[a, b])
        def c(x: int, y: int) -> int:
            return x


def test_each_needs_exactly_one_parent_and_no_nested_fan_out() -> None:
    wf = _wf()

    @wf.step
    def a(x: int) -> list[int]:
        return [x]

    with pytest.raises(flowkit.FlowDefinitionError, match="exactly one parent"):

        @wf.step(each=True)
        def b(x: int) -> int:
            return x

    @wf.step(after=a, each=True)
    def c(x: int) -> list[int]:
        return [x]

    @wf.step(after=c, each=True)
    def d(x: int) -> int:
        return x

    with pytest.raises(flowkit.FlowDefinitionError, match="nested fan-out"):
        wf.validate()


def test_bad_event_names_are_rejected() -> None:
    with pytest.raises(flowkit.FlowDefinitionError, match="event name"):
        flowkit.Workflow("w", on="has spaces")
