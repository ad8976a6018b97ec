"""The Engine on its own parts: a SQLite store and the in-memory publisher, no App."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit.runtime.engine import Engine
from flowkit.runtime.execute import Delivery
from flowkit.runtime.publisher import MemoryPublisher
from flowkit.status import RunStatus
from flowkit.store import Store


@flowkit.stage(queue="calc.double")
def double(x: int) -> int:
    return x * 2


@flowkit.stage(queue="calc.show")
def show(x: int) -> str:
    return f"= {x}"


calc = flowkit.Pipeline("calc", [double, show]).compile()


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(f"sqlite:///{tmp_path / 'engine.db'}", pool_size=2)
    s.ensure_schema()
    yield s
    s.dispose()


def test_an_engine_without_an_app_drives_steps_through_claim_and_complete(store: Store) -> None:
    publisher = MemoryPublisher()
    ended: list[tuple[str, str, RunStatus]] = []
    engine = Engine([calc], store, publisher, on_finished=lambda *run: ended.append(run))
    run_id, created = engine.submit(calc, 21, key="k", priority=3)
    assert created
    (first,) = publisher.take()
    assert (first.actor_name, first.queue_name) == ("calc.double", "calc.double")
    assert first.kwargs == {"step_id": first.kwargs["step_id"], "run_id": run_id, "key": "k"}
    assert first.options == {"broker_priority": 3}

    engine.execute(calc, double, first.kwargs["step_id"], Delivery.of("calc", first))
    (second,) = publisher.take()
    assert (second.actor_name, second.options) == ("calc.show", {"broker_priority": 3})
    assert store.run_state(run_id) == ("running", None, None, None)

    # A second copy of the first message (another message id) changes nothing.
    copy = first.copy(message_id="another-copy")
    engine.execute(calc, double, first.kwargs["step_id"], Delivery.of("calc", copy))
    assert publisher.take() == []

    engine.execute(calc, show, second.kwargs["step_id"], Delivery.of("calc", second))
    assert publisher.take() == []
    assert store.run_state(run_id)[:2] == ("succeeded", "= 42")  # type: ignore[index]
    assert [s.status.value for s in store.get_steps(run_id)] == ["succeeded", "succeeded"]
    assert ended == [(run_id, "calc", RunStatus.SUCCEEDED)]
