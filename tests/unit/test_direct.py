"""The hot statements on the driver's connection (``store/direct.py``) fail as every other
store path does: a database that cannot be reached is a ``StoreError`` in words, not the
driver's own exception (the pool's connect is not wrapped by SQLAlchemy)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flowkit.errors import StoreError
from flowkit.store.db import Database


def test_an_unreachable_database_is_a_store_error_not_the_drivers() -> None:
    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", pool_size=1)
    try:
        with pytest.raises(StoreError, match="database unavailable"):
            db.first(sa.select(sa.literal(1)), {}, durable=True)
        with pytest.raises(StoreError, match="database unavailable"):
            db.first(sa.select(sa.literal(1)), {}, durable=False)
    finally:
        db.dispose()
