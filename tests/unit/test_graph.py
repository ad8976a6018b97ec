"""Flow.compile(): the frozen FlowGraph the runtime reads, and the drawings made from it."""

from __future__ import annotations

import dataclasses

import pytest

import flowkit
from flowkit.drawing import dot, mermaid
from flowkit.graph import FlowGraph


def _workflow() -> flowkit.Workflow:
    wf = flowkit.Workflow("g", on="thing:arrived", timeout="1h")

    @wf.step
    def split(n: int) -> list[int]:
        return list(range(n))

    @wf.step(after=split, each=True, queue="work")
    def square(i: int) -> int:
        return i * i

    @wf.step(after=square)
    def gather(items: flowkit.Settled[int]) -> int:
        return sum(items.results)

    @wf.step(after=gather, wait_for="go", timeout="5s")
    def release(total: int, go: bool | flowkit.TimedOut) -> int:
        return total

    return wf


def test_compile_gives_the_graph_the_runtime_reads() -> None:
    wf = _workflow()
    graph = wf.compile()
    assert isinstance(graph, FlowGraph)
    assert (graph.name, graph.kind, graph.timeout_ms, graph.events) == (
        "g",
        "workflow",
        3_600_000,
        ("thing:arrived",),
    )
    assert graph.order() == ["split", "square", "gather", "release"]
    assert [s.name for s in graph.entries] == ["split"] and graph.entry is wf.steps["split"]
    assert graph.parents("gather") == ["square"] and graph.children("split") == ["square"]
    assert graph.is_each("square") and not graph.is_each("gather")
    assert graph.is_join("gather") and graph.is_join("release") and not graph.is_join("square")
    assert (graph.gate_size("gather"), graph.gate_size("release")) == (1, 2)
    assert graph.settles("gather", "square")
    assert graph.waits_for("go") == ["release"] and graph.waits_for("nope") == []
    assert graph.sinks() == ["release"] and graph.output_type is int
    assert graph.remaining("split") == [] and graph.queues() == {"default", "work"}
    assert wf.steps["release"].wait_timeout_ms == 5_000
    assert wf.steps["release"].timeout_ms is None


def test_a_pipeline_compiles_too() -> None:
    @flowkit.stage
    def one(n: int) -> int:
        return n

    @flowkit.stage
    def two(n: int) -> list[int]:
        return [n]

    graph = flowkit.Pipeline("p", [one, two]).compile()
    assert graph.kind == "pipeline" and graph.remaining("one") == ["two"]
    assert graph.output_type == list[int] and not graph.settles("two", "one")


def test_the_graph_is_cached_frozen_and_recompiled_when_a_step_is_added() -> None:
    wf = _workflow()
    graph = wf.compile()
    assert wf.compile() is graph
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        graph.steps["x"] = graph.entry  # type: ignore[index]
    children = graph.children("split")
    children.append("mutated")
    assert graph.children("split") == ["square"]

    @wf.step(after="release")
    def after(n: int) -> str:
        return str(n)

    again = wf.compile()
    assert again is not graph and again.sinks() == ["after"]
    assert graph.sinks() == ["release"]  # the old graph did not change


def test_compile_checks_a_workflow() -> None:
    wf = flowkit.Workflow("bad")

    @wf.step(after="ghost")
    def a(x: int) -> int:
        return x

    with pytest.raises(flowkit.FlowDefinitionError, match="runs after 'ghost'"):
        wf.compile()


def test_drawings_read_the_graph() -> None:
    wf = _workflow()
    text = mermaid(wf)
    assert text.startswith("flowchart TD")
    assert "-->|each item|" in text and "-->|settled|" in text
    assert 'g__event_thing_arrived(["on thing:arrived"]) -.-> g__split' in text
    assert "g__gather -> g__release;" in dot([wf])
