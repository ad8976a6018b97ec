"""Flows: the graphs of steps the runtime executes.

A flow is a declaration. It knows its steps, their types and which steps
follow which; it never touches the broker or the database itself.
:meth:`Flow.compile` checks it and freezes its graph into a
:class:`~flowkit.graph.FlowGraph`, which the runtime (:mod:`flowkit.runtime.plan`)
reads: the entry steps, each step's parents and children, which steps fan out
(``each``) and which wait for several completions (joins).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ._types import is_assignable, parse_duration_ms, type_name
from .cron import validate_cron
from .errors import FlowDefinitionError
from .graph import FlowGraph
from .names import validate_flow_name
from .stage import Stage

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    from .app import App, Run

__all__ = ["Flow", "Pipeline"]


class Flow:
    """Base class of :class:`Pipeline` and :class:`~flowkit.Workflow`: a named graph of stages.

    Subclasses declare the graph: they add each stage with its parents
    (:meth:`_add`), check it (:meth:`_check`) and say which joins settle their
    fan-out and which steps a stop skips; :meth:`compile` freezes it.
    """

    kind = "flow"
    #: makes the default App of a flow used without one; :mod:`flowkit.app` sets it
    #: (it imports this module, so this one never imports it back)
    default_app: ClassVar[Callable[[Flow], App]]

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
        #: each step's parents, as declared
        self._after: dict[str, list[str]] = {}
        self._each: set[str] = set()
        self._graph: FlowGraph | None = None
        self._app: App | None = None
        #: event names that start this flow (``app.emit``); empty for pipelines
        self.events: tuple[str, ...] = ()

    def _add(
        self, stage: Stage[Any, Any], parents: Sequence[str] = (), *, each: bool = False
    ) -> None:
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
        self._after[stage.name] = list(parents)
        if each:
            self._each.add(stage.name)
        self._graph = None

    # -- what a subclass declares -----------------------------------------------
    def _check(self) -> None:
        """Raise :class:`~flowkit.FlowDefinitionError` if the declared graph is not a flow."""

    def _settles(self, join: str, parent: str) -> bool:
        """Whether ``join`` takes every item of its fanned-out ``parent``, failed or not."""
        return False

    def _skipped_by(self, step: str) -> list[str]:
        """The steps never created when ``step`` stops the run early."""
        return []

    # -- the graph the runtime reads ------------------------------------------
    def compile(self) -> FlowGraph:
        """Check the flow and freeze its graph; the same graph until a step is added.

        Returns:
            the :class:`~flowkit.graph.FlowGraph` the runtime reads.

        Raises:
            FlowDefinitionError: an invalid graph (a workflow's unknown parent, cycle
                or edge type mismatch), naming the steps involved.

        .. versionadded:: 0.2
        """
        graph = self._graph
        if graph is None:
            self._check()
            after = self._after
            graph = FlowGraph.build(
                name=self.name,
                kind=self.kind,
                steps=self.steps,
                parents=after,
                each=self._each,
                settled=[(c, p) for c, ps in after.items() for p in ps if self._settles(c, p)],
                skipped={n: self._skipped_by(n) for n in self.steps},
                timeout_ms=self.timeout_ms,
                events=self.events,
            )
            self._graph = graph
        return graph

    # What users read of a flow's graph; the runtime reads compile() itself.
    @property
    def entry(self) -> Stage[Any, Any]:
        """The first entry step; its input type is the flow's input type."""
        return self.compile().entry

    @property
    def output_type(self) -> Any:
        """The type of a finished run's result, the single sink's output type."""
        return self.compile().output_type

    def queues(self) -> set[str]:
        """The names of the queues this flow's steps go to."""
        return self.compile().queues()

    # -- binding ---------------------------------------------------------------
    @property
    def app(self) -> App:
        """The App this flow is bound to; a default App is made on first use."""
        if self._app is None:
            Flow.default_app(self)
        assert self._app is not None
        return self._app

    def _bind(self, app: App) -> None:
        if self._app is not None and self._app is not app:
            raise FlowDefinitionError(
                f"{self.kind} {self.name!r} is already bound to App {self._app.name!r}; "
                "a flow belongs to one App"
            )
        self.compile()
        self._app = app

    def submit(
        self,
        input: Any,
        *,
        key: str | None = None,
        priority: int | None = None,
        connection: Connection | Session | None = None,
    ) -> Run:
        """Start a run of this flow; see :meth:`flowkit.App.submit`.

        With ``connection`` (your SQLAlchemy ``Connection`` or ``Session`` on the store's
        database) the run is stored in your transaction, and exists once it commits
        (docs/transactional-submit.md).

        .. versionchanged:: 0.4
           ``connection``.
        """
        return self.app.submit(self, input, key=key, priority=priority, connection=connection)

    def submit_many(
        self,
        inputs: Iterable[Any],
        *,
        keys: Iterable[str] | None = None,
        priority: int | None = None,
        connection: Connection | Session | None = None,
    ) -> list[Run]:
        """Start one run per input, in one transaction (yours, with ``connection``, as
        for :meth:`submit`); see :meth:`flowkit.App.submit_many`.

        .. versionadded:: 0.3
        .. versionchanged:: 0.4
           ``connection``.
        """
        return self.app.submit_many(
            self, inputs, keys=keys, priority=priority, connection=connection
        )

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
            self._after[right] = [left]

    def _skipped_by(self, step: str) -> list[str]:
        """The stages after ``step``, which never run once it stopped the run early."""
        order = list(self.steps)
        return order[order.index(step) + 1 :]
