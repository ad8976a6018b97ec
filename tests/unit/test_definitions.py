"""Declaring stages and pipelines: options, annotations and edge type checks."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import BaseModel

import flowkit
from flowkit import names
from flowkit._types import is_assignable, parse_duration_ms
from flowkit.cron import validate_cron
from flowkit.options import StepOptions


class Raw(BaseModel):
    tenant_id: str
    value: int


class Normalized(BaseModel):
    tenant_id: str
    value: int


class Special(Normalized):
    extra: str = ""


class Other(BaseModel):
    name: str


@flowkit.stage
def intake(raw: Raw) -> Normalized:
    return Normalized(tenant_id=raw.tenant_id, value=raw.value)


@flowkit.stage(queue="triage", retries=5, timeout="30s", min_backoff="10ms", max_backoff="1s")
def triage(item: Normalized, ctx: flowkit.Context) -> Normalized | flowkit.Stop:
    return item


@flowkit.stage
def other(item: Other) -> Other:
    return item


def test_bare_decorator_keeps_the_function_callable() -> None:
    assert isinstance(intake, flowkit.Stage)
    assert intake(Raw(tenant_id="t", value=1)) == Normalized(tenant_id="t", value=1)
    assert intake.name == "intake"
    assert intake.queue == "default"
    assert intake.retries == 3
    assert intake.input_type is Raw
    assert intake.output_type is Normalized
    assert not intake.takes_context


def test_options_are_parsed() -> None:
    assert triage.queue == "triage"
    assert triage.retries == 5
    assert triage.timeout_ms == 30_000
    assert triage.min_backoff_ms == 10
    assert triage.max_backoff_ms == 1_000
    assert triage.takes_context
    assert triage.output_type is Normalized  # Stop is stripped from the union


def test_missing_input_annotation() -> None:
    with pytest.raises(flowkit.FlowDefinitionError, match="annotate the input parameter 'x'"):

        @flowkit.stage
        def bad(x):  # type: ignore[no-untyped-def]
            return x


def test_missing_return_annotation() -> None:
    with pytest.raises(flowkit.FlowDefinitionError, match="annotate the return type"):

        @flowkit.stage
        def bad(x: int):  # type: ignore[no-untyped-def]
            return x


def test_second_parameter_must_be_context() -> None:
    with pytest.raises(flowkit.FlowDefinitionError, match=r"must be a flowkit\.Context"):

        @flowkit.stage  # type: ignore[arg-type]
        def bad(x: int, y: int) -> int:
            return x


def test_too_many_parameters() -> None:
    with pytest.raises(flowkit.FlowDefinitionError, match="3 positional parameters"):

        @flowkit.stage  # type: ignore[arg-type]
        def bad(x: int, ctx: flowkit.Context, z: int) -> int:
            return x


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries must be an integer >= 0"),
        ({"timeout": "soon"}, "expected a duration"),
        ({"priority": 999}, "priority must be an integer in 0..255"),
        ({"queue": "bad queue"}, "queue name 'bad queue' is not valid"),
        ({"queue": "jobs.DQ"}, "reserves for delay and dead-letter"),
        ({"name": "9lives"}, "is not a valid name"),
        ({"min_backoff": "2s", "max_backoff": "1s"}, "max_backoff is smaller"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    def fn(x: int) -> int:
        return x

    with pytest.raises(flowkit.FlowkitError, match=message):
        flowkit.stage(**options)(fn)


def test_pipeline_checks_each_edge_and_names_both_stages() -> None:
    with pytest.raises(flowkit.FlowDefinitionError) as info:
        flowkit.Pipeline("p", [intake, other])
    message = str(info.value)
    assert "'intake' returns Normalized" in message
    assert "'other' takes Other" in message


def test_pipeline_accepts_a_subclass_and_ignores_stop() -> None:
    @flowkit.stage
    def special(raw: Raw) -> Special:
        return Special(tenant_id=raw.tenant_id, value=raw.value)

    p = flowkit.Pipeline("ok", [special, triage])
    graph = p.compile()
    assert graph.entry is special
    assert graph.output_type is Normalized
    assert graph.children("special") == ["triage"]
    assert graph.children("triage") == []
    assert graph.parents("triage") == ["special"]
    assert graph.sinks() == ["triage"]
    assert graph.remaining("special") == ["triage"]


def test_pipeline_rejects_duplicates_empty_and_non_stages() -> None:
    with pytest.raises(flowkit.FlowDefinitionError, match="two steps are named 'intake'"):
        flowkit.Pipeline("p", [intake, intake])
    with pytest.raises(flowkit.FlowDefinitionError, match="has no stages"):
        flowkit.Pipeline("p", [])
    with pytest.raises(flowkit.FlowDefinitionError, match=r"decorate it with @flowkit\.stage"):
        flowkit.Pipeline("p", [lambda x: x])  # type: ignore[list-item]
    with pytest.raises(flowkit.FlowDefinitionError, match="not valid"):
        flowkit.Pipeline("bad name", [intake])


def test_app_rejects_two_flows_with_one_name_and_flows_in_two_apps() -> None:
    p1 = flowkit.Pipeline("same", [intake])
    p2 = flowkit.Pipeline("same", [intake])
    with pytest.raises(flowkit.FlowDefinitionError, match="two flows are named 'same'"):
        flowkit.App("a", flows=[p1, p2])
    flowkit.App("first", flows=[p1])
    with pytest.raises(flowkit.FlowDefinitionError, match="already bound to App 'first'"):
        flowkit.App("second", flows=[p1])


def test_a_bare_pipeline_gets_a_default_app() -> None:
    p = flowkit.Pipeline("lonely", [intake])
    assert p.app.name == "lonely"
    assert p.app.flow("lonely") is p
    with pytest.raises(flowkit.FlowNotFound, match="known: lonely"):
        p.app.flow("nope")


@pytest.mark.parametrize(
    ("src", "dst", "ok"),
    [
        (int, int, True),
        (int, float, True),
        (float, int, False),
        (Special, Normalized, True),
        (Normalized, Special, False),
        (list[Special], list[Normalized], True),
        (list[int], list[str], False),
        (dict[str, int], dict[str, int], True),
        (int | None, int, False),
        (int, int | None, True),
        (Any, Other, True),
        (Other, Any, True),
        (None, type(None), True),
        (list[int], list, True),
    ],
)
def test_is_assignable(src: Any, dst: Any, ok: bool) -> None:
    assert is_assignable(src, dst) is ok


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("250ms", 250),
        ("30s", 30_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        (1.5, 1_500),
        ("10", 10_000),
        (None, None),
    ],
)
def test_durations(value: Any, ms: int | None) -> None:
    assert parse_duration_ms(value, what="x") == ms


def test_bad_duration() -> None:
    with pytest.raises(flowkit.ConfigurationError, match="x: a duration cannot be negative"):
        parse_duration_ms(-1, what="x")


def test_options_are_parsed_once_into_frozen_step_options() -> None:
    opts = triage.options
    assert isinstance(opts, StepOptions)
    assert (opts.name, opts.queue, opts.retries, opts.timeout_ms) == ("triage", "triage", 5, 30_000)
    assert (triage.min_backoff_ms, triage.max_backoff_ms) == (opts.min_backoff_ms, 1_000)
    assert intake.options.queue_obj is None and intake.limits == intake.options.limits
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.retries = 9  # type: ignore[misc]
    with pytest.raises(AttributeError, match="'retries' is a step option"):
        triage.retries = 9  # type: ignore[assignment]
    assert triage.retries == 5
    assert StepOptions.parse("fn", queue=flowkit.Queue("q", priority=7)).priority == 7
    assert StepOptions.parse("fn").max_backoff_ms == 300_000
    assert StepOptions.parse("fn", min_backoff="10m").max_backoff_ms == 600_000


def test_an_unknown_option_is_a_type_error() -> None:
    def fn(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"stage\(\) got an unexpected keyword argument 'retry'"):
        flowkit.stage(retry=3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="unexpected keyword argument 'delay'"):
        flowkit.stage(delay="1s")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"step\(\) got an unexpected keyword argument 'inputs'"):
        flowkit.Workflow("w").step(inputs=["a"])  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"Stage\(\) got an unexpected keyword argument 'x'"):
        flowkit.Stage(fn, x=1)  # type: ignore[call-arg]


def test_names_are_checked_in_one_place() -> None:
    with pytest.raises(flowkit.FlowDefinitionError, match="App name 'a b' is not a valid name"):
        names.validate_name("a b", what="App name")
    assert names.validate_name("ok.name-1", what="x") == "ok.name-1"
    with pytest.raises(flowkit.FlowDefinitionError, match="stage 'fn' wait_for '9' is not a"):
        StepOptions.parse("fn", wait_for="9")
    with pytest.raises(flowkit.FlowDefinitionError, match=r"flowkit\.Queue: queue name 'a b'"):
        flowkit.Queue("a b")
    with pytest.raises(flowkit.ConfigurationError, match="schedule 'often' is not a cron"):
        flowkit.Pipeline("p", [intake], schedule="often")
    assert validate_cron("*/5 * * * *", what="x") == "*/5 * * * *"
