"""The flow of the cluster scenarios: a short pipeline writing the fault suite's ledger.

Its own App and queues (``fkc.*``), declared as quorum queues when
``FLOWKIT_QUEUE_TYPE=quorum`` (the scenarios set it); the ledger is
:mod:`fault_flows`'s, so :class:`faultkit.Checker` counts what a node loss cost.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))

from fault_flows import begin, effect
from pydantic import BaseModel, Field

import flowkit

FLOW = "fkc"


class Order(BaseModel):
    n: int = Field(ge=0)
    work_ms: int = 0


@flowkit.stage(queue="fkc.a", retries=3, timeout="30s")
def take(order: Order, ctx: flowkit.Context) -> Order:
    begin(ctx)
    effect(ctx)
    return order


@flowkit.stage(queue="fkc.b", retries=3, timeout="30s")
def check(order: Order, ctx: flowkit.Context) -> Order:
    begin(ctx)
    effect(ctx)
    return order


@flowkit.stage(queue="fkc.a", retries=3, timeout="30s")
def close(order: Order, ctx: flowkit.Context) -> int:
    begin(ctx)
    effect(ctx)
    return order.n


pipeline = flowkit.Pipeline(FLOW, [take, check, close])

app = flowkit.App("cluster", flows=[pipeline])
