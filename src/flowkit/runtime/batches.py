"""Many runs of one flow at once (``submit_many``): checked, stored, then published.

:meth:`Engine.submit_many <.engine.Engine.submit_many>` runs these in order:

1. :func:`check_inputs`: every input is validated, and one
   :class:`~flowkit.InputValidationError` lists every bad one, before anything else;
2. :func:`plan_runs`: each run's first rows, as :func:`~.plan.initial_rows` plans them
   for ``submit``;
3. the store's :meth:`~flowkit.store.Submits.create_many`: one transaction for them all;
4. :func:`publish_batch`: after the commit, one batch of messages (the created runs'
   entry steps, and the still-queued entry steps of runs whose key was known), then
   the deadline timers of a flow with a ``timeout``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._ids import new_id
from ..errors import BrokerError, InputValidationError
from ..graph import FlowGraph
from ..payloads import PayloadLimits
from ..store import NewRun, Submitted
from .amqp import describe
from .faults import fault
from .plan import initial_rows
from .publisher import Outgoing, Publisher, RunRef
from .validation import check_input

__all__ = ["MAX_LISTED", "check_inputs", "plan_runs", "publish_batch"]

#: The bad inputs a batch's error message spells out; its ``errors`` has them all.
MAX_LISTED = 20


def check_inputs(flow: FlowGraph, values: Sequence[Any], limits: PayloadLimits) -> list[Any]:
    """The JSON form of every input, once all of them validate against the first stage.

    Raises:
        InputValidationError: one or more inputs do not validate (or are over a payload
            limit). Its ``errors`` holds every error of every bad input, each ``loc``
            starting with the input's index; the message names each bad input (the
            first :data:`MAX_LISTED` of them) and what is wrong with it.
    """
    payloads: list[Any] = []
    bad: list[tuple[int, InputValidationError]] = []
    for i, value in enumerate(values):
        try:
            payloads.append(check_input(flow, value, limits))
        except InputValidationError as exc:
            bad.append((i, exc))
    if bad:
        raise _refused(flow, len(values), bad)
    return payloads


def _refused(
    flow: FlowGraph, count: int, bad: list[tuple[int, InputValidationError]]
) -> InputValidationError:
    stage = flow.entry.name
    listed = "; ".join(f"input {i}: {_what(exc)}" for i, exc in bad[:MAX_LISTED])
    if len(bad) > MAX_LISTED:
        listed += f"; and {len(bad) - MAX_LISTED} more (all in .errors)"
    errors = [{**e, "loc": [i, *e.get("loc", [])]} for i, exc in bad for e in exc.errors]
    return InputValidationError(
        f"{len(bad)} of {count} inputs for {flow.name!r} do not match stage {stage!r} "
        f"(nothing was stored or sent): {listed}",
        errors=errors,
        stage=stage,
    )


def _what(exc: InputValidationError) -> str:
    """Each error of one input, ``field: message``, as the error of one submit says it."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', [])) or '(root)'}: {e.get('msg', '')}"
        for e in exc.errors
    )


def plan_runs(flow: FlowGraph, payloads: Sequence[Any], keys: Sequence[str | None]) -> list[NewRun]:
    """A new run id and the first rows of each run, for validated ``payloads``."""
    planned = []
    for payload, key in zip(payloads, keys, strict=True):
        first, waiting, entry_waits = initial_rows(flow, payload)
        planned.append(NewRun(new_id(), key, payload, first, waiting, entry_waits))
    return planned


def publish_batch(
    publisher: Publisher,
    flow: FlowGraph,
    done: Sequence[Submitted],
    keys: Sequence[str | None],
    priority: int | None,
    trace: dict[str, str] | None,
) -> None:
    """Publish what a stored batch needs, in one batch, then the deadlines of its new runs.

    Raises:
        BrokerError: the runs are stored but not every message went out; the recovery
            sweep sends them, and so does submitting the batch again with its keys.
    """
    refs = [
        RunRef(flow.name, d.run_id, k, priority, trace) for d, k in zip(done, keys, strict=True)
    ]
    created = [ref for ref, d in zip(refs, done, strict=True) if d.created]
    if created:
        fault("submit-after-commit")
    messages = [
        (ref, Outgoing.of(s))
        for ref, d in zip(refs, done, strict=True)
        for s in [*d.steps, *d.timers]
    ]
    try:
        publisher.publish_many(messages)
        if flow.timeout_ms:
            for ref in created:
                publisher.publish_control("deadline", ref, flow.timeout_ms)
    except BrokerError as exc:
        cause = describe(exc.__cause__, publisher.url) if exc.__cause__ else str(exc)
        raise BrokerError(
            f"{len(created)} new run(s) of {flow.name!r} are stored, but their messages could "
            f"not all be published: {cause}; the recovery sweep (`flowkit recover`) sends "
            "them once the broker is back, and so does submitting the batch again with "
            "the same keys"
        ) from exc
