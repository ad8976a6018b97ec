"""Flows: the graphs of steps the runtime executes.

A flow is a declaration. It knows its steps, their types and which steps
follow which; it never touches the broker or the database itself. The
runtime (:mod:`flowkit.runtime.engine`) asks it two questions: *which step
starts a run* and *what comes after this step*.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._types import is_assignable, type_name
from .errors import FlowDefinitionError
from .stage import Stage

if TYPE_CHECKING:
    from .app import App, Run

__all__ = ["Flow", "NextStep", "Pipeline"]

_FLOW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class NextStep:
    """A step the runtime must queue after another one finished."""

    name: str
    input: Any


class Flow:
    """Base class of :class:`Pipeline` (and, later, workflows): a named graph of stages."""

    kind = "flow"

    def __init__(self, name: str, steps: Sequence[Stage[Any, Any]]) -> None:
        if not isinstance(name, str) or not _FLOW_NAME.match(name):
            raise FlowDefinitionError(
                f"flow name {name!r} is not valid: use letters, digits, '_', '.', '-'"
            )
        self.name = name
        self.steps: dict[str, Stage[Any, Any]] = {}
        for s in steps:
            if not isinstance(s, Stage):
                raise FlowDefinitionError(
                    f"{self.kind} {name!r}: {s!r} is not a stage; decorate it with @flowkit.stage"
                )
            if s.name in self.steps:
                raise FlowDefinitionError(
                    f"{self.kind} {name!r}: two stages are named {s.name!r}; "
                    "give one a different name with @flowkit.stage(name=...)"
                )
            self.steps[s.name] = s
        if not self.steps:
            raise FlowDefinitionError(f"{self.kind} {name!r} has no stages")
        self._app: App | None = None

    # -- what the runtime asks -------------------------------------------------
    @property
    def entry(self) -> Stage[Any, Any]:
        """The stage that receives the run's input."""
        raise NotImplementedError

    @property
    def output_type(self) -> Any:
        """The type of a finished run's result."""
        raise NotImplementedError

    def after(self, step: str, output: Any) -> list[NextStep]:
        """The steps to queue once ``step`` succeeded with ``output`` (JSON form)."""
        raise NotImplementedError

    def remaining(self, step: str) -> list[str]:
        """Steps that will never run once ``step`` stopped the run early."""
        raise NotImplementedError

    def successors(self, step: str) -> list[str]:
        """Names of the steps that directly follow ``step``."""
        raise NotImplementedError

    def queues(self) -> set[str]:
        return {s.queue for s in self.steps.values()}

    # -- binding ---------------------------------------------------------------
    @property
    def app(self) -> App:
        """The App this flow is bound to; a default App is made on first use."""
        if self._app is None:
            from .app import App

            App(self.name, flows=[self])
        assert self._app is not None
        return self._app

    def _bind(self, app: App) -> None:
        if self._app is not None and self._app is not app:
            raise FlowDefinitionError(
                f"{self.kind} {self.name!r} is already bound to App {self._app.name!r}; "
                "a flow belongs to one App"
            )
        self._app = app

    def submit(self, input: Any, *, key: str | None = None) -> Run:
        """Start a run of this flow; see :meth:`flowkit.App.submit`."""
        return self.app.submit(self, input, key=key)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {' -> '.join(self.steps)}>"


class Pipeline(Flow):
    """A linear flow: each stage's output is the next stage's input.

    Building it checks every edge: stage *i*'s output type must be accepted
    by stage *i+1*'s input type, so a mismatch fails at import, not at 3 a.m.::

        pipeline = flowkit.Pipeline("exceptions", [intake, triage, policy])

    Parameters:
        name: the flow's name, unique within its App.
        stages: the stages, in order.

    Raises:
        FlowDefinitionError: a type mismatch between two stages (naming both),
            a duplicate stage name or an empty list.

    .. versionadded:: 0.1
    """

    kind = "pipeline"

    def __init__(self, name: str, stages: Sequence[Stage[Any, Any]]) -> None:
        if isinstance(stages, Stage) or not isinstance(stages, Sequence):
            raise FlowDefinitionError(f"pipeline {name!r}: pass the stages as a list")
        super().__init__(name, stages)
        self._order = list(self.steps)
        for left, right in zip(self._order, self._order[1:], strict=False):
            out_t = self.steps[left].output_type
            in_t = self.steps[right].input_type
            if not is_assignable(out_t, in_t):
                raise FlowDefinitionError(
                    f"pipeline {name!r}: stage {left!r} returns {type_name(out_t)} but the next "
                    f"stage {right!r} takes {type_name(in_t)}"
                )

    @property
    def entry(self) -> Stage[Any, Any]:
        return self.steps[self._order[0]]

    @property
    def output_type(self) -> Any:
        return self.steps[self._order[-1]].output_type

    def after(self, step: str, output: Any) -> list[NextStep]:
        i = self._order.index(step)
        if i + 1 == len(self._order):
            return []
        return [NextStep(self._order[i + 1], output)]

    def remaining(self, step: str) -> list[str]:
        return self._order[self._order.index(step) + 1 :]

    def successors(self, step: str) -> list[str]:
        """Names of the steps that directly follow ``step``."""
        i = self._order.index(step)
        return self._order[i + 1 : i + 2]
