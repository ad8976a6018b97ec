"""A shop's checkout workflow, started in the same transaction as the order's row.

``flowkit dev`` / ``flowkit worker examples/outbox/app.py:app`` load ``app``; ``shop.py``
holds the shop's own table and the unit of work that places an order; ``run.py`` is
the quickstart. No side effects on import.
"""

from __future__ import annotations

from pydantic import BaseModel

import flowkit


class Order(BaseModel):
    """What the workflow needs of an order: its id in the shop's table, and the amount."""

    order_id: int
    customer: str
    amount_cents: int


class Charged(BaseModel):
    order_id: int
    customer: str
    payment_ref: str


class Receipt(BaseModel):
    order_id: int
    text: str


@flowkit.stage(queue="outbox.charge", retries=3)
def charge(order: Order, ctx: flowkit.Context) -> Charged:
    """Charge the customer (simulated); the idempotency key is the payment provider's."""
    return Charged(
        order_id=order.order_id,
        customer=order.customer,
        payment_ref=f"pay-{ctx.idempotency_key[:12]}",
    )


@flowkit.stage(queue="outbox.notify")
def notify(charged: Charged) -> Receipt:
    """Send the receipt (simulated)."""
    return Receipt(
        order_id=charged.order_id,
        text=f"order {charged.order_id} paid by {charged.customer} ({charged.payment_ref})",
    )


checkout = flowkit.Pipeline("outbox-checkout", [charge, notify])

app = flowkit.App("outbox", flows=[checkout])
