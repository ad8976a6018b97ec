"""Quickstart: place orders whose checkout runs start in the order's own transaction.

::

    python examples/outbox/run.py            # --orders N (12), --timeout S (60)

With no configuration everything runs in this process: the memory broker with worker
threads, and the SQLite file ``flowkit.db`` in the current directory, which holds the
shop's table too. With ``FLOWKIT_BROKER_URL=amqp://...`` and
``FLOWKIT_DATABASE_URL=postgresql://...`` it only places the orders and waits, and
``flowkit worker examples/outbox/app.py:app`` does the work.

Every third order is out of stock: its transaction rolls back after the order's row and
its run were written, and neither exists. One order is placed on a bare ``Connection``,
whose run a worker's recovery sweep starts after the commit. Exits 0 when every placed
order has exactly one run, succeeded, and no refused order left a run or a row.
"""

from __future__ import annotations

import argparse
import sys
import time

import sqlalchemy as sa
from app import app
from shop import OutOfStock, engine_for, metadata, orders, place_order
from sqlalchemy.orm import Session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=12, help="orders to place (12)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (60)")
    args = parser.parse_args(argv)

    app.store  # noqa: B018 - flowkit's tables exist before the shop's transactions begin
    engine = engine_for(app.settings.database_url)
    metadata.create_all(engine)
    if app.settings.embedded:
        app.start_worker()  # on SQLite, before a transaction holds the database's lock

    placed, refused = [], 0
    for i in range(args.orders):
        customer, amount = f"customer-{i % 5}", 1000 + 25 * i
        with Session(engine) as session:
            try:
                placed.append(place_order(session, customer, amount, in_stock=i % 3 != 2))
                session.commit()
            except OutOfStock:
                session.rollback()
                refused += 1
    with engine.connect() as conn:  # a bare Connection: the sweep starts its run
        placed.append(place_order(conn, "customer-bare", 999))
        conn.commit()
    started = time.monotonic()

    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(orders.c.id, orders.c.run_id).where(orders.c.id.in_(placed))
        ).all()
        total = conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()
    results = {}
    for order_id, run_id in rows:
        run = app.run(run_id)
        results[order_id] = run.result(
            timeout=max(1.0, args.timeout - (time.monotonic() - started))
        )
    keys = {r.key for r in app.runs(flow="outbox-checkout", limit=100_000)}
    one_each = all(f"order-{order_id}" in keys for order_id in placed)
    failed = [r for r in app.runs(flow="outbox-checkout", limit=100_000) if r.status != "succeeded"]

    print(f"orders placed        {len(placed)}")
    print(f"orders refused       {refused} (rolled back: no row, no run)")
    for order_id in sorted(results)[:3]:
        print(f"  {results[order_id].text}")
    print(f"runs succeeded       {len(results)}")
    print(f"runs not succeeded   {len(failed)}")
    print(f"shop rows / runs     {total} / {len(keys)}")
    app.close()
    engine.dispose()
    ok = len(results) == len(placed) and one_each and not failed and total == len(keys)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
