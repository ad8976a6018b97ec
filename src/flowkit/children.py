"""A workflow step that is another flow: the stage :meth:`flowkit.Workflow.call` declares.

The stage takes the child flow's input type and returns its output type, so the
parent's edges are type-checked like any step's. It has no function to run:
when its step is claimed the runtime starts the child run and the step waits
for it as a row (``runtime/calls.py``, ``docs/child-flows.md``).

.. versionadded:: 0.5
"""

from __future__ import annotations

from typing import Any

from .errors import FlowDefinitionError
from .flows import Flow
from .stage import Stage

__all__ = ["call_stage"]


def call_stage(
    child: Flow, *, name: str | None = None, queue: str | None = None
) -> Stage[Any, Any]:
    """The stage of a step that runs ``child`` as a child run.

    Raises:
        FlowDefinitionError: ``child`` is not a flow, or its graph is invalid.
    """
    if not isinstance(child, Flow):
        raise FlowDefinitionError(f"Workflow.call takes a Pipeline or Workflow, not {child!r}")
    graph = child.compile()
    step = name or child.name.replace("-", "_")

    def run_child(value: Any) -> Any:
        raise FlowDefinitionError(
            f"step {step!r} runs flow {child.name!r} as a child run; it cannot be called directly"
        )

    run_child.__annotations__ = {"value": graph.entry.input_type, "return": graph.output_type}
    run_child.__name__ = step
    options: dict[str, Any] = {"name": step, "chain": False}
    if queue is not None:
        options["queue"] = queue
    stage: Stage[Any, Any] = Stage(run_child, **options)
    stage.child = child
    return stage
