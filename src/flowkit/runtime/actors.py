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
from .outcomes import Refused, StepFailed
from .publisher import CONTROL_ACTOR, CONTROL_QUEUE, RunRef
from .shutdown import hand_back

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


def _step_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
    """``(step_id, run_id)`` of a step message's keyword arguments (``key`` optional).

    Raises:
        Refused: they are not a step message's (the message is dead-lettered, not run).
    """
    step_id, run_id, key = kwargs.get("step_id"), kwargs.get("run_id"), kwargs.get("key")
    extra = set(kwargs) - {"step_id", "run_id", "key"}
    if args:
        raise Refused("malformed message: positional arguments (a step takes keywords only)")
    if extra:
        raise Refused(f"malformed message: unexpected argument(s) {', '.join(sorted(extra))}")
    if not isinstance(step_id, str) or not isinstance(run_id, str):
        raise Refused("malformed message: step_id and run_id must be strings")
    if key is not None and not isinstance(key, str):
        raise Refused("malformed message: key must be a string")
    return step_id, run_id


def _step_actor(
    engine: Engine, broker: dramatiq.Broker, flow: FlowGraph, stage: Stage[Any, Any]
) -> dramatiq.Actor[Any, Any]:
    def run_step(*args: Any, **kwargs: Any) -> None:
        step_id, run_id = _step_arguments(args, kwargs)
        message = CurrentMessage.get_current_message()
        if message is not None and hand_back(message):
            return  # this worker is stopping: another one runs it
        if message is not None:
            got = Delivery.of(flow.name, message)
        else:  # called directly, outside a worker
            got = Delivery(RunRef(flow.name, run_id, kwargs.get("key")), new_id())
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
