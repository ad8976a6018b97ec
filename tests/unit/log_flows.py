"""A tiny app for the JSON-log tests: a step that logs, and one that fails its first attempt."""

from __future__ import annotations

import logging

from pydantic import BaseModel, SecretStr

import flowkit

#: what the step logs through ctx.logger, and through a library's own logger
STEP_LINE = "checking the order"
LIBRARY_LINE = "library call made"


class Order(BaseModel):
    order_id: str
    card: SecretStr


@flowkit.stage(queue="logs.check")
def check(order: Order, ctx: flowkit.Context) -> str:
    ctx.logger.info(STEP_LINE)
    # A library logging on its own logger, with the step's secret in the text.
    logging.getLogger("somelib").info(
        "%s with card %s", LIBRARY_LINE, order.card.get_secret_value()
    )
    return order.order_id


@flowkit.stage(queue="logs.check", retries=1, min_backoff="1ms", max_backoff="2ms")
def book(order_id: str, ctx: flowkit.Context) -> str:
    if ctx.attempt == 1:
        raise RuntimeError("the ledger is busy")
    return f"booked {order_id}"


pipeline = flowkit.Pipeline("logs-orders", [check, book])
nightly = flowkit.Workflow("logs-nightly", schedule="0 3 * * *", schedule_input=1)


@nightly.step(queue="logs.check")
def report(n: int) -> int:
    return n


app = flowkit.App("logs", flows=[pipeline, nightly])
