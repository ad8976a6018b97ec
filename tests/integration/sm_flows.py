"""A two-stage pipeline for the ``submit_many`` test on RabbitMQ + PostgreSQL."""

from __future__ import annotations

from pydantic import BaseModel

import flowkit


class Item(BaseModel):
    n: int


@flowkit.stage(queue="sm.double")
def double(item: Item) -> int:
    return item.n * 2


@flowkit.stage(queue="sm.inc")
def inc(n: int) -> int:
    return n + 1


orders = flowkit.Pipeline("sm-orders", [double, inc])

app = flowkit.App("sm", flows=[orders])
