"""Flows: the graphs of steps the runtime executes.

A flow is a declaration. It knows its steps, their types and which steps
follow which; it never touches the broker or the database itself. The
runtime (:mod:`flowkit.runtime.plan`) reads its graph: the entry steps, each
step's parents and children, which steps fan out (``each``) and which wait
for several completions (joins).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._types import is_assignable, parse_duration_ms, type_name
from .errors import FlowDefinitionError
from .stage import Stage

if TYPE_CHECKING:
    from .app import App, Run

__all__ = ["Flow", "Pipeline"]

_FLOW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")


def validate_cron(expr: str, *, what: str) -> str:
    """Check a five-field cron expression now, not at the first tick."""
    from .scheduling import parse_cron

    parse_cron(expr, what=what)
    return expr


def validate_flow_name(name: str, kind: str) -> str:
    if not isinstance(name, str) or not _FLOW_NAME.match(name):
        raise FlowDefinitionError(
            f"{kind} name {name!r} is not valid: use letters, digits, '_', '.', '-'"
        )
    return name


class Flow:
    """Base class of :class:`Pipeline` and :class:`~flowkit.Workflow`: a named graph of stages.

    The graph is read through a few methods; subclasses fill :attr:`steps`,
    ``_parents`` and ``_children`` (and ``_each`` for fan-out steps).
    """

    kind = "flow"

    def __init__(
        self,
        name: str,
        *,
        timeout: str | float | None = None,
        schedule: str | None = None,
        schedule_input: Any = None,
    ) -> None:
        self.name = validate_flow_name(name, self.kind)
        what = f"{self.kind} {name!r}"
        #: the run's deadline: past it the run ends ``timed_out``
        self.timeout_ms = parse_duration_ms(timeout, what=f"{what} timeout")
        #: a cron expression (``"*/5 * * * *"``) run by ``flowkit scheduler``
        self.schedule = validate_cron(schedule, what=what) if schedule else None
        #: the input each scheduled run starts with (default: the tick's time)
        self.schedule_input = schedule_input
        self.steps: dict[str, Stage[Any, Any]] = {}
        self._parents: dict[str, list[str]] = {}
        self._children: dict[str, list[str]] = {}
        self._each: set[str] = set()
        self._app: App | None = None
        #: event names that start this flow (``app.emit``); empty for pipelines
        self.events: tuple[str, ...] = ()

    def _add(self, stage: Stage[Any, Any]) -> None:
        if not isinstance(stage, Stage):
            raise FlowDefinitionError(
                f"{self.kind} {self.name!r}: {stage!r} is not a stage; "
                "decorate it with @flowkit.stage"
            )
        if stage.name in self.steps:
            raise FlowDefinitionError(
                f"{self.kind} {self.name!r}: two steps are named {stage.name!r}; "
                "give one a different name with name=..."
            )
        self.steps[stage.name] = stage
        self._parents.setdefault(stage.name, [])
        self._children.setdefault(stage.name, [])

    # -- the graph the runtime reads ------------------------------------------
    def _ensure_built(self) -> None:
        """Validate the graph once it is complete (workflows add steps over time)."""

    @property
    def entries(self) -> list[Stage[Any, Any]]:
        """The steps that receive the run's input (no parents)."""
        self._ensure_built()
        return [s for n, s in self.steps.items() if not self._parents[n]]

    @property
    def entry(self) -> Stage[Any, Any]:
        """The first entry step; its input type is the flow's input type."""
        return self.entries[0]

    def parents(self, step: str) -> list[str]:
        self._ensure_built()
        return list(self._parents[step])

    def children(self, step: str) -> list[str]:
        """Names of the steps that directly follow ``step``."""
        self._ensure_built()
        return list(self._children[step])

    # Kept for the runtime's duplicate-delivery path.
    successors = children

    def is_each(self, step: str) -> bool:
        """Whether ``step`` runs once per item of its parent's output list."""
        return step in self._each

    def is_join(self, step: str) -> bool:
        """Whether ``step`` waits for several completions: a join, or a signal wait."""
        parents = self._parents[step]
        if self.steps[step].wait_for:
            return True
        return len(parents) > 1 or any(p in self._each for p in parents)

    def gate_size(self, step: str) -> int:
        """How many completions a waiting step counts: its parents, plus its signal."""
        return len(self._parents[step]) + (1 if self.steps[step].wait_for else 0)

    def waits_for(self, signal: str) -> list[str]:
        """Steps that wait for the signal ``signal``."""
        return [n for n, s in self.steps.items() if s.wait_for == signal]

    def sinks(self) -> list[str]:
        """Steps with no children: the run succeeds when all of them have."""
        self._ensure_built()
        return [n for n in self.steps if not self._children[n]]

    def order(self) -> list[str]:
        """Step names in declaration order (a topological order)."""
        self._ensure_built()
        return list(self.steps)

    @property
    def output_type(self) -> Any:
        """The type of a finished run's result, the single sink's output type."""
        sinks = self.sinks()
        if len(sinks) == 1:
            out = self.steps[sinks[0]].output_type
            return list[out] if sinks[0] in self._each else out  # type: ignore[valid-type]
        return dict[str, Any]

    def settles(self, join: str, parent: str) -> bool:
        """Whether ``join`` takes every item of ``parent``, failed or not (``Settled``)."""
        return False

    def remaining(self, step: str) -> list[str]:
        """Steps never created because ``step`` stopped the run early (for the timeline)."""
        return []

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
        self._ensure_built()
        self._app = app

    def submit(self, input: Any, *, key: str | None = None, priority: int | None = None) -> Run:
        """Start a run of this flow; see :meth:`flowkit.App.submit`."""
        return self.app.submit(self, input, key=key, priority=priority)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {', '.join(self.steps)}>"


class Pipeline(Flow):
    """A linear flow: each stage's output is the next stage's input.

    Building it checks every edge: stage *i*'s output type must be accepted
    by stage *i+1*'s input type, so a mismatch fails at import, not at 3 a.m.::

        pipeline = flowkit.Pipeline("exceptions", [intake, triage, policy])

    Parameters:
        name: the flow's name, unique within its App.
        stages: the stages, in order.
        timeout: the run's deadline (``"1h"``); past it the run ends ``timed_out``.
        schedule: a cron expression; ``flowkit scheduler`` starts a run per tick.
        schedule_input: the input of scheduled runs (default: the tick's time).

    Raises:
        FlowDefinitionError: a type mismatch between two stages (naming both),
            a duplicate stage name or an empty list.

    .. versionadded:: 0.1
    """

    kind = "pipeline"

    def __init__(
        self,
        name: str,
        stages: Sequence[Stage[Any, Any]],
        *,
        timeout: str | float | None = None,
        schedule: str | None = None,
        schedule_input: Any = None,
    ) -> None:
        super().__init__(name, timeout=timeout, schedule=schedule, schedule_input=schedule_input)
        if isinstance(stages, Stage) or not isinstance(stages, Sequence):
            raise FlowDefinitionError(f"pipeline {name!r}: pass the stages as a list")
        for s in stages:
            self._add(s)
        if not self.steps:
            raise FlowDefinitionError(f"pipeline {name!r} has no stages")
        order = list(self.steps)
        for left, right in itertools.pairwise(order):
            out_t = self.steps[left].output_type
            in_t = self.steps[right].input_type
            if not is_assignable(out_t, in_t):
                raise FlowDefinitionError(
                    f"pipeline {name!r}: stage {left!r} returns {type_name(out_t)} but the next "
                    f"stage {right!r} takes {type_name(in_t)}"
                )
            self._children[left].append(right)
            self._parents[right].append(left)

    def remaining(self, step: str) -> list[str]:
        """The stages after ``step``, which never run once it stopped the run early."""
        order = list(self.steps)
        return order[order.index(step) + 1 :]
