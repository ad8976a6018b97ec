"""flowkit's side of the benchmark: the same six no-op stages, and a 1,000-item fan-out."""

from __future__ import annotations

from typing import Any

import flowkit


def _make(i: int) -> flowkit.Stage[Any, Any]:
    def step(x: int) -> int:
        return x

    step.__name__ = f"s{i}"
    return flowkit.stage(name=f"s{i}", queue=f"fk.s{i}", retries=0)(step)


pipeline = flowkit.Pipeline("bench6", [_make(i) for i in range(6)])

fan = flowkit.Workflow("bench-fan")


@fan.step(queue="fk.fan")
def spread(n: int) -> list[int]:
    return list(range(n))


@fan.step(after=spread, each=True, queue="fk.fan")
def child(i: int) -> int:
    return i


@fan.step(after=child, queue="fk.fan")
def callback(xs: list[int]) -> int:
    return len(xs)


app = flowkit.App("bench", flows=[pipeline, fan])
