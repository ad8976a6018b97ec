"""A flow's compiled graph: the immutable view of its steps the runtime reads.

:meth:`flowkit.Flow.compile` checks a flow and freezes it into a
:class:`FlowGraph`: the entry steps, each step's parents and children, which
steps fan out (``each``), which wait for several completions (joins and signal
waits) and which joins settle their fan-out. A graph never changes; a workflow
that gains a step compiles to a new one.

.. versionadded:: 0.2
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

from .fingerprints import fingerprint
from .stage import Stage

__all__ = ["FlowGraph"]


@dataclass(frozen=True, eq=False, repr=False)
class FlowGraph:
    """The steps of a flow and the edges between them, checked and frozen.

    Made by :meth:`flowkit.Flow.compile` (through :meth:`build`). Step names are
    the keys of :attr:`steps`, in declaration order (a topological order).

    Attributes:
        name: the flow's name.
        kind: ``"pipeline"`` or ``"workflow"``.
        steps: the stages by name, in declaration order (read-only).
        timeout_ms: the run's deadline, if the flow has one.
        events: the event names that start the flow (empty for pipelines).

    .. versionadded:: 0.2
    """

    name: str
    kind: str
    steps: Mapping[str, Stage[Any, Any]]
    timeout_ms: int | None
    events: tuple[str, ...]
    _parents: Mapping[str, tuple[str, ...]]
    _children: Mapping[str, tuple[str, ...]]
    _each: frozenset[str]
    _settled: frozenset[tuple[str, str]]
    _skipped: Mapping[str, tuple[str, ...]]

    @classmethod
    def build(
        cls,
        *,
        name: str,
        kind: str,
        steps: Mapping[str, Stage[Any, Any]],
        parents: Mapping[str, Sequence[str]],
        each: Iterable[str] = (),
        settled: Iterable[tuple[str, str]] = (),
        skipped: Mapping[str, Sequence[str]] | None = None,
        timeout_ms: int | None = None,
        events: Iterable[str] = (),
    ) -> FlowGraph:
        """Freeze a flow's graph (the flow has checked it).

        Parameters:
            name, kind, timeout_ms, events: the flow's.
            steps: the stages by name, in declaration order.
            parents: every step's parents, in order (none for an entry step).
            each: the steps that run once per item of their parent's list output.
            settled: the ``(join, parent)`` edges where the join takes every item of
                its fanned-out parent, failed or not (``Settled[...]``).
            skipped: for a step that stops its run early, the steps never created.
        """
        ups = {n: tuple(parents.get(n, ())) for n in steps}
        downs: dict[str, list[str]] = {n: [] for n in steps}
        for n, ps in ups.items():
            for p in ps:
                downs[p].append(n)
        return cls(
            name,
            kind,
            MappingProxyType(dict(steps)),
            timeout_ms,
            tuple(events),
            MappingProxyType(ups),
            MappingProxyType({n: tuple(c) for n, c in downs.items()}),
            frozenset(each),
            frozenset(settled),
            MappingProxyType({n: tuple(s) for n, s in (skipped or {}).items()}),
        )

    @property
    def entries(self) -> list[Stage[Any, Any]]:
        """The steps that receive the run's input (no parents)."""
        return [s for n, s in self.steps.items() if not self._parents[n]]

    @property
    def entry(self) -> Stage[Any, Any]:
        """The first entry step; its input type is the flow's input type."""
        return self.entries[0]

    def parents(self, step: str) -> list[str]:
        """Names of the steps ``step`` directly follows, in the order declared."""
        return list(self._parents[step])

    def children(self, step: str) -> list[str]:
        """Names of the steps that directly follow ``step``."""
        return list(self._children[step])

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
        return [n for n in self.steps if not self._children[n]]

    def order(self) -> list[str]:
        """Step names in declaration order (a topological order)."""
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
        return (join, parent) in self._settled

    def remaining(self, step: str) -> list[str]:
        """Steps never created because ``step`` stopped the run early (for the timeline)."""
        return list(self._skipped.get(step, ()))

    @cached_property
    def fingerprint(self) -> str:
        """The hash of the parts of this definition a stored run depends on
        (:mod:`flowkit.fingerprints`); every run records the one it started under."""
        return fingerprint(self)

    def queues(self) -> set[str]:
        """The names of the queues the flow's steps go to."""
        return {s.queue for s in self.steps.values()}

    def __repr__(self) -> str:
        return f"<FlowGraph {self.kind} {self.name}: {', '.join(self.steps)}>"
