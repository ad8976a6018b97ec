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
other = flowkit.Pipeline("cli-other", [flowkit.stage(name="echo")(price.fn)])

fan = flowkit.Workflow("cli-fan", on="fan:go")


@fan.step
def split(n: int) -> list[int]:
    return list(range(n))


@fan.step(after=split, each=True)
def square(x: int) -> int:
    return x * x


@fan.step(after=square)
def total(squares: list[int]) -> int:
    return sum(squares)


app = flowkit.App("cli", flows=[pipeline, other, fan])
not_a_flow = 42
