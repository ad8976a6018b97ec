"""flowkit's side of the benchmark: the same six no-op stages, a 1,000-item fan-out, and a
one-second step limited to two at a time (the concurrency scenario)."""

from __future__ import annotations

import time
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


#: How long the concurrency-limited step sleeps, and how many of it may run at once.
OCR_SECONDS = 1.0
OCR_CONCURRENCY = 2


@flowkit.stage(name="ocr", queue="fk.ocr", retries=0, concurrency=OCR_CONCURRENCY)
def ocr(x: int) -> int:
    time.sleep(OCR_SECONDS)  # an OCR call's wall time, holding one of the two slots
    return x


limited = flowkit.Pipeline("bench-ocr", [ocr])

app = flowkit.App("bench", flows=[pipeline, fan, limited])
