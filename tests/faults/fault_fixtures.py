"""The fault suite's shared fixtures: the fault flows' App on a fresh database (``fk``),
the ledger's checker (``checker``), and a submitter under load that never outlives its
test (``load``). Import them into a scenario's module, as ``helpers``' fixtures are."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from faultkit import Checker, Submitter
from helpers import bound_app


@pytest.fixture(name="fk")
def fk_fixture(pg_url: str, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The fault flows' App on this test's database, the ledger made, queues purged."""
    import fault_flows
    import psycopg

    monkeypatch.setenv("FLOWKIT_DATABASE_URL", pg_url)
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for ddl in fault_flows.LEDGER_DDL:
            conn.execute(ddl)
    with bound_app(fault_flows.app, pg_url, rabbitmq_url):
        yield fault_flows


@pytest.fixture(name="checker")
def checker_fixture(pg_url: str, request: pytest.FixtureRequest) -> Checker:
    return Checker(pg_url, request)


@pytest.fixture(name="load")
def load_fixture() -> Iterator[Callable[..., Submitter]]:
    """Start a :class:`Submitter`; a failing test never leaves one submitting."""
    made: list[Submitter] = []

    def start(flow: Any, n: int, **kwargs: Any) -> Submitter:
        made.append(Submitter(flow, n, **kwargs))
        return made[-1]

    yield start
    for s in made:
        s.halt.set()
        s.join(30)
