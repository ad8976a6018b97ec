"""Flows for the priority test: each step on a queue of its own, timers hop every 200 ms."""

from __future__ import annotations

from pydantic import BaseModel

import flowkit


class Go(BaseModel):
    ok: bool


chain = flowkit.Workflow("pr-chain")


@chain.step(queue="pr.a")
def first(n: int) -> int:
    return n + 1


@chain.step(after=first, queue="pr.c")
def second(n: int) -> int:
    return n + 1


signalled = flowkit.Workflow("pr-signal")


@signalled.step(queue="pr.a")
def ask(n: int) -> int:
    return n


@signalled.step(after=ask, wait_for="go", queue="pr.b")
def answer(n: int, go: Go) -> bool:
    return go.ok


impatient = flowkit.Workflow("pr-impatient")


@impatient.step(wait_for="maybe", timeout="300ms", queue="pr.t")
def without(n: int, maybe: Go | flowkit.TimedOut) -> bool:
    return not isinstance(maybe, flowkit.TimedOut)


later = flowkit.Workflow("pr-later")


@later.step(delay="1h", queue="pr.d")
def delayed(n: int) -> int:
    return n


bounded = flowkit.Workflow("pr-bounded", timeout="1h")


@bounded.step(queue="pr.x")
def bounded_step(n: int) -> int:
    return n


failing = flowkit.Workflow("pr-failing")


@failing.step(queue="pr.g", retries=0)
def refuse(n: int) -> int:
    raise flowkit.PermanentError("no")


@failing.step(after=refuse, queue="pr.h")
def after_refuse(n: int) -> int:
    return n


app = flowkit.App(
    "pr",
    flows=[chain, signalled, impatient, later, bounded, failing],
    max_priority=9,
    timer_hop="200ms",
)
