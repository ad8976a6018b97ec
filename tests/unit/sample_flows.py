"""A small pipeline for the CLI tests, loaded by path as the CLI's users do."""

from __future__ import annotations

from pydantic import BaseModel

import flowkit


class Order(BaseModel):
    tenant_id: str
    amount: int


class Total(BaseModel):
    tenant_id: str
    total: int


@flowkit.stage(queue="cli.price")
def price(order: Order) -> Total:
    return Total(tenant_id=order.tenant_id, total=order.amount * 2)


@flowkit.stage(queue="cli.fail", retries=0)
def explode(total: Total) -> Total:
    if total.tenant_id == "boom":
        raise RuntimeError("exploded on purpose")
    return total


pipeline = flowkit.Pipeline("cli-orders", [price, explode])
other = flowkit.Pipeline("cli-other", [flowkit.stage(name="echo")(lambda_free := price.fn)])
app = flowkit.App("cli", flows=[pipeline, other])
not_a_flow = 42
