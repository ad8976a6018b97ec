"""Runs that survive a redeploy, or are stranded by it, never silently.

Every run records the fingerprint of the flow definition it started under
(:mod:`flowkit.fingerprints`). When the deployed definition differs, a live run
goes on where that is safe: each of its open steps still exists (and still fans
out if it did) and its stored input validates against the step's input type.
Otherwise the run is marked *stranded* with the reason (``step `review` no
longer exists``, ``input of `score` no longer validates: ...``): its steps are
not retried and not dead-lettered; ``flowkit runs list --stranded`` lists it and
``flowkit retry RUN --from STEP`` moves it onto the new definition.

Three places find them:

- a worker, when it starts (:func:`check_deployed`), for the live runs of a
  fingerprint other than its own: it marks those it cannot go on with (a run
  keeps the fingerprint it started under until ``retry --from`` moves it);
- a message for a step its flow no longer has (an unknown actor,
  :func:`unknown_step`, called by the dead-letter recorder);
- a stored input that no longer validates when its step is claimed
  (:func:`strand_input`, from :mod:`.execute`): for a run of another fingerprint
  it strands the run, for a run of this one it is the step's failure, as before.

``flowkit flows diff`` runs the same check without marking anything
(:func:`check_flow` with ``mark=False``). See ``docs/deploys.md``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..errors import StoreError
from ..graph import FlowGraph
from ..redact import validation_summary
from ..status import StepStatus
from ..store import LiveRun, OpenStep, Store

__all__ = [
    "FlowCheck",
    "Stranded",
    "check_deployed",
    "check_flow",
    "run_reason",
    "step_reason",
    "strand_input",
    "unknown_step",
]

log = logging.getLogger("flowkit.deploys")
_OPEN = (StepStatus.QUEUED.value, StepStatus.RUNNING.value, StepStatus.WAITING.value)


class Stranded(Exception):
    """The step's run was marked stranded: its message is acknowledged, nothing else."""


def step_reason(flow: FlowGraph, step: OpenStep) -> str | None:
    """Why ``flow`` cannot go on with an open step, or ``None`` if it can."""
    stage = flow.steps.get(step.name)
    if stage is None:
        return f"step `{step.name}` no longer exists"
    if step.item is not None and not flow.is_each(step.name):
        return f"step `{step.name}` no longer runs once per item"
    if step.input is None and step.status == StepStatus.WAITING.value:
        return None  # its input is gathered when it opens, and checked then
    try:
        stage.parse_input(step.input)
    except ValidationError as exc:
        return f"input of `{step.name}` no longer validates: {validation_summary(exc)}"
    return None


def run_reason(flow: FlowGraph, run: LiveRun) -> str | None:
    """Why ``flow`` cannot go on with a live run (every open step's reason), or ``None``."""
    reasons = dict.fromkeys(r for s in run.steps if (r := step_reason(flow, s)) is not None)
    return "; ".join(reasons) or None


@dataclass
class FlowCheck:
    """What the deployed definition of one flow makes of its live runs of other fingerprints.

    Attributes:
        flow: the flow's name.
        fingerprint: the deployed definition's.
        compatible: how many of those runs it goes on with.
        stranded: ``(run_id, reason)`` of the others.
        fingerprints: how many of those runs started under each other fingerprint
            (``None``: from before flowkit recorded them).
        already: the runs of the flow marked stranded before (not counted above).
    """

    flow: str
    fingerprint: str
    compatible: int = 0
    stranded: list[tuple[str, str]] = field(default_factory=list)
    fingerprints: Counter[str | None] = field(default_factory=Counter)
    already: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "fingerprint": self.fingerprint,
            "compatible": self.compatible,
            "stranded": [{"run_id": r, "reason": why} for r, why in self.stranded],
            "fingerprints": {str(k): n for k, n in self.fingerprints.items()},
            "already_stranded": self.already,
        }


def check_flow(store: Store, flow: FlowGraph, *, mark: bool, page: int = 500) -> FlowCheck:
    """Check the live runs of ``flow`` started under another fingerprint against it.

    With ``mark``, the runs it cannot go on with are marked stranded; without, nothing
    changes (``flowkit flows diff``).
    """
    done = FlowCheck(flow.name, flow.fingerprint, already=store.strands.count(flow.name))
    after = ""
    while True:
        batch = store.strands.differing(flow.name, flow.fingerprint, after=after, limit=page)
        if not batch:
            return done
        for run in batch:
            done.fingerprints[run.fingerprint] += 1
            reason = run_reason(flow, run)
            if reason is None:
                done.compatible += 1
            elif not mark or store.strands.mark(run.id, reason):
                done.stranded.append((run.id, reason))
        after = batch[-1].id
        if len(batch) < page:
            return done


def check_deployed(store: Store, flows: Iterable[FlowGraph]) -> list[FlowCheck]:
    """A starting worker's check of the live runs of other fingerprints (marks, logs).

    A database that cannot be reached is logged and skipped: the worker starts,
    and the per-message checks still strand what cannot go on.
    """
    checks = []
    for flow in flows:
        try:
            check = check_flow(store, flow, mark=True)
        except StoreError as exc:
            log.warning(
                "could not check the live runs of %s against this deploy: %s", flow.name, exc
            )
            continue
        if check.compatible:
            log.info(
                "%d live run(s) of %s go on under this definition (%s)",
                check.compatible,
                flow.name,
                flow.fingerprint,
            )
        if check.stranded:
            first = check.stranded[0][1]
            log.warning(
                "%d live run(s) of %s are stranded by this deploy (first: %s); "
                "see `flowkit runs list --stranded`",
                len(check.stranded),
                flow.name,
                first,
            )
        checks.append(check)
    return checks


def strand_input(
    store: Store, flow: FlowGraph, run_id: str, step: str, exc: ValidationError
) -> None:
    """A claimed step's stored input did not validate: strand its run if it started under
    another definition; under this one it is the step's failure (this returns).

    Raises:
        Stranded: the run is marked (now or before); the message is done with.
    """
    state = store.strands.state(run_id)
    if state is None or state[0] == flow.fingerprint:
        return
    reason = f"input of `{step}` no longer validates: {validation_summary(exc)}"
    if state[1] is None and store.strands.mark(run_id, reason):
        log.warning("run %s of %s stranded: %s", run_id, flow.name, reason)
    raise Stranded(run_id)


def unknown_step(store: Store, flows: Iterable[FlowGraph]) -> Callable[..., bool]:
    """The dead-letter recorder's check of a message for an actor this worker lacks.

    The returned function takes ``(actor, run_id, step_id)`` and strands the run when
    the actor names a flow of this worker and the step row is open but its step is no
    longer in the flow (``True``: the run is stranded, the message needs no dead letter).
    """
    graphs = {f.name: f for f in flows}

    def check(actor: str, run_id: str, step_id: str) -> bool:
        flow = next((g for n, g in graphs.items() if actor.startswith(n + ".")), None)
        if flow is None:
            return False
        row = store.step_row(step_id)
        if row is None or row.run_id != run_id or row.name in flow.steps:
            return False
        if row.status not in _OPEN:
            return True  # done already: this copy is a late duplicate, nothing to keep
        reason = f"step `{row.name}` no longer exists"
        if store.strands.mark(run_id, reason):
            log.warning("run %s of %s stranded: %s", run_id, flow.name, reason)
        return True

    return check
