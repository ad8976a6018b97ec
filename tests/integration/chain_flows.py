"""A four-stage pipeline on four queues, for the chained-execution tests."""

from __future__ import annotations

from typing import Any

import flowkit


def _stage(i: int, **options: Any) -> flowkit.Stage[Any, Any]:
    def step(x: int) -> int:
        return x + 1

    step.__name__ = f"c{i}"
    return flowkit.stage(name=f"c{i}", queue=f"chain.c{i}", **options)(step)


pipeline = flowkit.Pipeline("chain4", [_stage(0), _stage(1), _stage(2), _stage(3)])
app = flowkit.App("chain", flows=[pipeline])
