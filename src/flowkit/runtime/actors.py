"""Binding flow steps to Dramatiq actors.

Each step becomes a real Dramatiq actor named ``<flow>.<step>`` on the step's
queue, so Dramatiq's middleware and tooling keep working. The actor function
carries only ids; everything else is read from and written to the store by
the :class:`~flowkit.runtime.engine.Engine`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from .._ids import new_id
from ..graph import FlowGraph
from ..redact import secret_scope
from ..stage import Stage
from .engine import Engine
from .execute import Delivery
from .outcomes import StepFailed
from .publisher import CONTROL_ACTOR, CONTROL_QUEUE, RunRef

__all__ = ["actor_name", "declare_actors"]


def actor_name(flow: FlowGraph, step: str) -> str:
    return f"{flow.name}.{step}"


def _retry_when(retries: int, exc: BaseException) -> bool:
    # The engine decides retries from the database (attempts survive
    # redeliveries, Dramatiq's counter does not) and says so with Retry.
    return isinstance(exc, dramatiq.Retry)


def declare_actors(engine: Engine, broker: dramatiq.Broker, flows: Iterable[FlowGraph]) -> None:
    """Declare one actor per step of every flow, and the control actor, on ``broker``."""
    for flow in flows:
        for stage in flow.steps.values():
            _step_actor(engine, broker, flow, stage)

    def control(op: str, run_id: str) -> None:
        message = CurrentMessage.get_current_message()
        run = RunRef.of_message("", message) if message is not None else RunRef("", run_id)
        engine.on_control(op, run)

    dramatiq.Actor(
        control,
        broker=broker,
        actor_name=CONTROL_ACTOR,
        queue_name=CONTROL_QUEUE,
        priority=0,
        options={"retry_when": _retry_when, "throws": (StepFailed,)},
    )


def _step_actor(
    engine: Engine, broker: dramatiq.Broker, flow: FlowGraph, stage: Stage[Any, Any]
) -> dramatiq.Actor[Any, Any]:
    def run_step(step_id: str, run_id: str, key: str | None = None) -> None:
        message = CurrentMessage.get_current_message()
        if message is not None:
            got = Delivery.of(flow.name, message)
        else:  # called directly, outside a worker
            got = Delivery(RunRef(flow.name, run_id, key), new_id())
        # The step's secrets (noted by the engine) stay hidden in logs and errors
        # until the step is over.
        with secret_scope():
            engine.execute(flow, stage, step_id, got)

    run_step.__name__ = stage.name
    run_step.__qualname__ = f"{flow.name}.{stage.name}"
    run_step.__module__ = getattr(stage.fn, "__module__", __name__)
    return dramatiq.Actor(
        run_step,
        broker=broker,
        actor_name=actor_name(flow, stage.name),
        queue_name=stage.queue,
        priority=stage.priority,
        options={
            "retry_when": _retry_when,
            "throws": (StepFailed,),
            "min_backoff": stage.min_backoff_ms,
            "max_backoff": stage.max_backoff_ms,
        },
    )
