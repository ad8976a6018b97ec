"""A two-stage pipeline and the host's own table, for the transactional submit tests
(``submit(connection=...)``) on RabbitMQ + PostgreSQL; also run as a script by them
(:func:`main`): one host transaction, then the process ends."""

from __future__ import annotations

import os
import sys

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

import flowkit


class Order(BaseModel):
    order_id: int


@flowkit.stage(queue="tx.charge")
def charge(order: Order) -> int:
    return order.order_id * 10


@flowkit.stage(queue="tx.ship")
def ship(cents: int) -> int:
    return cents + 1


orders = flowkit.Pipeline("tx-orders", [charge, ship])

app = flowkit.App("tx", flows=[orders])

business = sa.MetaData()
#: The host application's table, in the same database as flowkit's.
shop_orders = sa.Table(
    "shop_orders",
    business,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("thread", sa.Integer, nullable=True),
    sa.Column("run_id", sa.String(32), nullable=True),
)


def place(session: Session | sa.Connection, thread: int | None = None) -> tuple[int, str]:
    """The host's unit of work: its business row and the run for it, one transaction."""
    order_id = session.execute(
        shop_orders.insert().values(thread=thread).returning(shop_orders.c.id)
    ).scalar_one()
    run = orders.submit({"order_id": order_id}, key=f"order-{order_id}", connection=session)
    session.execute(shop_orders.update().where(shop_orders.c.id == order_id).values(run_id=run.id))
    return order_id, run.id


def main(mode: str) -> None:
    """Place one order with a ``session`` or a bare ``connection``, commit, and end.

    With ``FLOWKIT_FAULT=submit-after-commit`` a Session's process dies right after the
    commit, before the publish; a bare Connection has nothing to publish: the process
    ends (``os._exit``, no clean-up) right after its commit.
    """
    url = os.environ["FLOWKIT_DATABASE_URL"]
    app.configure(database_url=url, broker_url=os.environ["FLOWKIT_BROKER_URL"])
    engine = sa.create_engine(url)
    if mode == "session":
        with Session(engine) as session:
            order_id, run_id = place(session)
            print(f"placed {order_id} {run_id}", flush=True)
            session.commit()
    else:
        with engine.connect() as conn:
            order_id, run_id = place(conn)
            print(f"placed {order_id} {run_id}", flush=True)
            conn.commit()
    print("committed", flush=True)
    app.engine.publisher.flush()  # a Session's messages, unless the fault ended it first
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
