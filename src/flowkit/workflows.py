"""``flowkit.Workflow``: a DAG of typed steps with runtime fan-out and joins."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar, get_args, get_origin, overload

from typing_extensions import Unpack

from ._types import is_assignable, type_name
from .children import call_stage
from .context import Context
from .errors import FlowDefinitionError
from .flows import Flow
from .joins import settled_item_type
from .names import validate_event_name
from .options import StepKeywords, check_keywords
from .stage import Stage, StageDecorator

__all__ = ["Workflow"]

In = TypeVar("In")
Out = TypeVar("Out")
StepRef = Stage[Any, Any] | str


def _list_item(tp: Any) -> Any | None:
    """``T`` if ``tp`` is ``list[T]`` (or ``Sequence[T]``), else ``None``."""
    origin = get_origin(tp)
    if origin in (list, Sequence) or (isinstance(origin, type) and issubclass(origin, list)):
        args = get_args(tp)
        return args[0] if args else Any
    return None


class Workflow(Flow):
    """A DAG of steps: ``after=`` edges, ``each=True`` fan-out, joins and an event trigger.

    ::

        matching = flowkit.Workflow("loan-matching", on="loan:application:uploaded")

        @matching.step(timeout="60s")
        def prepare(app: LoanApplication) -> list[LenderRef]: ...

        @matching.step(after=prepare, each=True)      # one task per lender, in parallel
        def match(lender: LenderRef) -> Match: ...

        @matching.step(after=match)                   # the join: every Match, in order
        def finalize(matches: list[Match]) -> Ranking: ...

    A step with several parents names one parameter after each parent
    (``def report(prepare: Prepared, match: list[Match])``). A join whose
    parameter is ``flowkit.Settled[Match]`` runs once every item is done,
    with the failures listed, instead of failing the run on the first one.

    Types are checked along every edge, and unknown parents and cycles are
    rejected, when the workflow is first used (bound to an App, submitted or
    served); :meth:`validate` checks it on demand.

    Parameters:
        name: the flow's name, unique within its App.
        on: an event name (or several) that starts this workflow via ``app.emit``.
        timeout: the run's deadline (``"24h"``); past it the run ends ``timed_out``
            and its pending steps are skipped.
        schedule: a cron expression (``"0 2 * * *"``); ``flowkit scheduler`` starts
            a run per tick.
        schedule_input: the input of scheduled runs (default: the tick's time).

    .. versionadded:: 0.1
    """

    kind = "workflow"

    def __init__(
        self,
        name: str,
        *,
        on: str | Sequence[str] | None = None,
        timeout: str | float | None = None,
        schedule: str | None = None,
        schedule_input: Any = None,
    ) -> None:
        super().__init__(name, timeout=timeout, schedule=schedule, schedule_input=schedule_input)
        names = [on] if isinstance(on, str) else list(on or [])
        self.events = tuple(validate_event_name(e, what=f"workflow {name!r}") for e in names)

    @overload
    def step(self, fn: Callable[[In], Coroutine[Any, Any, Out]], /) -> Stage[In, Out]: ...

    @overload
    def step(self, fn: Callable[[In, Context], Coroutine[Any, Any, Out]], /) -> Stage[In, Out]: ...

    @overload
    def step(self, fn: Callable[[In], Out], /) -> Stage[In, Out]: ...

    @overload
    def step(self, fn: Callable[[In, Context], Out], /) -> Stage[In, Out]: ...

    @overload
    def step(
        self,
        fn: None = None,
        /,
        *,
        after: StepRef | Sequence[StepRef] | None = None,
        each: bool = False,
        **options: Unpack[StepKeywords],
    ) -> StageDecorator: ...

    def step(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        after: StepRef | Sequence[StepRef] | None = None,
        each: bool = False,
        **options: Unpack[StepKeywords],
    ) -> Stage[Any, Any] | StageDecorator:
        """Declare a step of this workflow (usable bare or with options).

        The function may be an ``async def`` (see :func:`flowkit.stage`).

        Parameters:
            after: the parent step(s), as stage objects or names.
            each: run once per item of the (single) parent's list output, in parallel.
            wait_for: the name of a signal the step waits for once its parent is
                done; the function takes the parent's output and the signal's payload
                (``def approve(req: Request, approval: Approval) -> Decision``). The
                run shows ``waiting`` and holds no worker meanwhile. ``timeout`` is
                then how long to wait: past it the step fails with
                :class:`~flowkit.StepTimeout`, or, if the payload's annotation names
                :class:`~flowkit.TimedOut` (``approval: Approval | flowkit.TimedOut``),
                runs with a ``TimedOut`` in place of the payload. A signal without a
                payload is accepted only when the type lists ``None``.
            delay: wait this long (``"10m"``) after the step is ready before running it.
            options: ``name``, ``queue``, ``retries``, ``min_backoff``, ``max_backoff``,
                ``timeout``, ``priority``, ``concurrency``, ``concurrency_key``,
                ``rate_limit`` and ``rate_limit_key`` are as for :func:`flowkit.stage`.

        Returns:
            the :class:`~flowkit.Stage`, still callable as the plain function. Type
            checkers see ``Stage[Input, Output]`` for a step of one parent (or an
            entry step), and ``Stage[Any, Any]`` for a step with several parents or
            a signal wait, whose function takes several inputs.

        .. versionchanged:: 0.2
           typed: ``Stage[Input, Output]`` rather than ``Any``.
        .. versionchanged:: 0.4
           ``async def`` functions.
        .. versionchanged:: 0.2
           a signal wait's timeout gives :class:`~flowkit.TimedOut`; running with
           ``None`` on a timeout (a payload type that lists ``None``) is deprecated.
        """
        check_keywords(options, StepKeywords, what="Workflow.step")
        if after is None:
            parents: list[str] = []
        elif isinstance(after, (Stage, str)):
            parents = [_ref_name(after)]
        else:
            parents = [_ref_name(a) for a in after]
        # For a signal wait, timeout= is how long the step waits for its signal.
        wait_timeout = options.pop("timeout", None) if options.get("wait_for") else None

        def wrap(f: Callable[..., Any]) -> Stage[Any, Any]:
            inputs = parents if len(parents) > 1 else None
            stage: Stage[Any, Any] = Stage(f, **options, inputs=inputs, wait_timeout=wait_timeout)
            if len(set(parents)) != len(parents):
                raise FlowDefinitionError(
                    f"workflow {self.name!r}: step {stage.name!r} lists a parent twice"
                )
            if each and len(parents) != 1:
                raise FlowDefinitionError(
                    f"workflow {self.name!r}: step {stage.name!r} has each=True, so it needs "
                    "exactly one parent whose output is a list"
                )
            self._add(stage, parents, each=each)
            return stage

        if fn is not None:
            return wrap(fn)
        return wrap

    def call(
        self,
        flow: Flow,
        /,
        *,
        after: StepRef | Sequence[StepRef] | None = None,
        each: bool = False,
        name: str | None = None,
        queue: str | None = None,
    ) -> Stage[Any, Any]:
        """Declare a step that is another flow: it starts a child run and waits for it.

        ::

            @matching.step
            def prepare(app: LoanApplication) -> list[LenderRef]: ...

            lenders = matching.call(lender_flow, after=prepare, each=True)  # one child per item

            @matching.step(after=lenders)
            def finalize(results: list[LenderResult]) -> Ranking: ...

        The step takes the child flow's input type and returns its output type; the
        edges are checked at build like any step's. It holds no worker thread while
        the child runs: its row is ``waiting``. A child that fails fails the step (or is
        an item failure of a ``Settled`` join); cancelling the run cancels its live
        children. The child run's key is derived from the run, the step and the item,
        so a redelivered step never starts a second child. The child flow runs in this
        workflow's App (it is added to it). See ``docs/child-flows.md``.

        Parameters:
            flow: the child flow, a :class:`~flowkit.Pipeline` or a :class:`Workflow`,
                declared in full before this call.
            after: the parent step (one; or none for an entry step).
            each: start one child run per item of the parent's list output; the join
                after this step receives the children's outputs in item order.
            name: the step's name (default: the child flow's, ``-`` as ``_``).
            queue: the queue of the step's own message (default as for any step).

        Raises:
            FlowDefinitionError: not a flow, several parents, or the workflow calling itself.

        .. versionadded:: 0.5
        """
        if flow is self:
            raise FlowDefinitionError(f"workflow {self.name!r} cannot call itself")
        stage = call_stage(flow, name=name, queue=queue)
        parents: list[StepRef] = []
        if isinstance(after, (Stage, str)):
            parents = [after]
        elif after is not None:
            parents = list(after)
        if len(parents) > 1:
            raise FlowDefinitionError(
                f"workflow {self.name!r}: step {stage.name!r} calls flow {flow.name!r}, "
                "so it takes one parent (its output is the child's input)"
            )
        return self._add_call(stage, [_ref_name(p) for p in parents], each)

    def _add_call(self, stage: Stage[Any, Any], parents: list[str], each: bool) -> Stage[Any, Any]:
        if each and len(parents) != 1:
            raise FlowDefinitionError(
                f"workflow {self.name!r}: step {stage.name!r} has each=True, so it needs "
                "exactly one parent whose output is a list"
            )
        self._add(stage, parents, each=each)
        return stage

    # -- validation ------------------------------------------------------------
    def validate(self) -> None:
        """Check the graph: parents exist, no cycles, and every edge's types agree.

        Raises:
            FlowDefinitionError: naming the steps involved.
        """
        self.compile()

    def _check(self) -> None:
        if not self.steps:
            raise FlowDefinitionError(f"workflow {self.name!r} has no steps")
        for step, parents in self._after.items():
            for p in parents:
                if p not in self.steps:
                    raise FlowDefinitionError(
                        f"workflow {self.name!r}: step {step!r} runs after {p!r}, "
                        f"which is not a step of this workflow (steps: {', '.join(self.steps)})"
                    )
        self._check_cycles()
        for n in self._each:
            if self._after[n][0] in self._each:
                raise FlowDefinitionError(
                    f"workflow {self.name!r}: step {n!r} fans out over the items of "
                    f"{self._after[n][0]!r}, which is itself fanned out; "
                    "nested fan-out is not supported: return a flat list instead"
                )
        self._check_types()
        roots = [n for n in self.steps if not self._after[n]]
        first = self.steps[roots[0]].input_type
        for r in roots[1:]:
            if not is_assignable(first, self.steps[r].input_type):
                raise FlowDefinitionError(
                    f"workflow {self.name!r}: entry steps {roots[0]!r} and {r!r} both receive "
                    f"the run's input but take {type_name(first)} and "
                    f"{type_name(self.steps[r].input_type)}"
                )

    def _check_cycles(self) -> None:
        state: dict[str, int] = {}
        path: list[str] = []

        def visit(n: str) -> None:
            state[n] = 1
            path.append(n)
            for p in self._after[n]:
                if state.get(p) == 1:
                    cycle = [*path[path.index(p) :], p]
                    raise FlowDefinitionError(
                        f"workflow {self.name!r} has a cycle: {' -> '.join(reversed(cycle))}"
                    )
                if p not in state:
                    visit(p)
            path.pop()
            state[n] = 2

        for n in self.steps:
            if n not in state:
                visit(n)

    def _check_types(self) -> None:
        for child, parents in self._after.items():
            stage = self.steps[child]
            for p in parents:
                produced = self.steps[p].output_type
                expected = stage.param_type(p) if stage.inputs else stage.input_type
                edge = f"workflow {self.name!r}: step {p!r} -> {child!r}"
                if child in self._each:
                    item = _list_item(produced)
                    if item is None:
                        raise FlowDefinitionError(
                            f"{edge}: {child!r} has each=True but {p!r} returns "
                            f"{type_name(produced)}, not a list"
                        )
                    if not is_assignable(item, expected):
                        raise FlowDefinitionError(
                            f"{edge}: {p!r} returns a list of {type_name(item)} but {child!r} "
                            f"takes {type_name(expected)} for each item"
                        )
                    continue
                if p in self._each:
                    settled = settled_item_type(expected)
                    wanted = settled if settled is not None else _list_item(expected)
                    if wanted is None or not is_assignable(produced, wanted):
                        raise FlowDefinitionError(
                            f"{edge}: {child!r} joins the items of {p!r}, so it takes "
                            f"list[{type_name(produced)}] (or flowkit.Settled"
                            f"[{type_name(produced)}]), not {type_name(expected)}"
                        )
                    continue
                if not is_assignable(produced, expected):
                    raise FlowDefinitionError(
                        f"{edge}: {p!r} returns {type_name(produced)} but {child!r} "
                        f"takes {type_name(expected)}"
                    )

    def _settles(self, join: str, parent: str) -> bool:
        """Whether ``join`` takes ``Settled[...]`` for the items of ``parent``."""
        stage = self.steps[join]
        expected = stage.param_type(parent) if stage.inputs else stage.input_type
        return settled_item_type(expected) is not None


def _ref_name(ref: StepRef) -> str:
    if isinstance(ref, Stage):
        return ref.name
    if isinstance(ref, str):
        return ref
    raise FlowDefinitionError(f"after= takes steps or step names, not {ref!r}")
