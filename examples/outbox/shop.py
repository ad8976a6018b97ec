"""The shop's own table and the unit of work that places an order.

The order's row and the run of its checkout are written in one transaction of the
shop's own SQLAlchemy ``Session``: ``checkout.submit(..., connection=session)``. If
the transaction rolls back, neither exists and nothing is sent; once it commits, both
do, and the run's first message goes out right after the commit.
"""

from __future__ import annotations

import sqlalchemy as sa
from app import Order, checkout
from sqlalchemy.orm import Session

metadata = sa.MetaData()

#: The shop's table, in the same database as flowkit's.
orders = sa.Table(
    "shop_orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer", sa.String(100), nullable=False),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("run_id", sa.String(32), nullable=True),
)


class OutOfStock(Exception):
    """The shop refuses the order after it wrote its row: the transaction rolls back."""


def place_order(
    session: Session | sa.Connection, customer: str, amount_cents: int, *, in_stock: bool = True
) -> int:
    """Insert the order and start its checkout, in the caller's transaction (not committed).

    Raises:
        OutOfStock: after both were written; the caller rolls back, and neither exists.
    """
    order_id = session.execute(
        orders.insert().values(customer=customer, amount_cents=amount_cents).returning(orders.c.id)
    ).scalar_one()
    run = checkout.submit(
        Order(order_id=order_id, customer=customer, amount_cents=amount_cents),
        key=f"order-{order_id}",
        connection=session,
    )
    session.execute(orders.update().where(orders.c.id == order_id).values(run_id=run.id))
    if not in_stock:
        raise OutOfStock(f"order {order_id}: out of stock")
    return order_id


def engine_for(database_url: str) -> sa.Engine:
    """The shop's engine on flowkit's database (psycopg 3 for ``postgresql://``)."""
    for prefix in ("postgres://", "postgresql://"):
        if database_url.startswith(prefix):
            database_url = "postgresql+psycopg://" + database_url[len(prefix) :]
    return sa.create_engine(database_url)
