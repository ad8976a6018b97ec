"""The runtime protocol: submit, run a step, signal, cancel, deadlines, recover.

The database decides, the broker only carries step ids:

1. ``submit`` inserts the run and its first step (``queued``), commits, then publishes.
2. A delivered message *claims* its step with a guarded UPDATE; a step that is
   finished, or running under another message, is a duplicate and is acked.
3. Success records the output and inserts the successors in one transaction;
   they are published after the commit. If the worker dies between the commit
   and the publish, the broker redelivers the message (it was never acked) and
   the redelivery, finding its own completion, publishes the successors still queued.
4. A failure is retried with backoff until the stage's limit, then the step and
   the run are ``failed`` with the error recorded. Invalid input fails at once.

The :class:`Engine` is built from explicit parts — the compiled flows, a
:class:`~flowkit.store.Store`, a :class:`~.publisher.Publisher`, the payload
limits, the observers and an on-finished callback — and knows nothing of the
:class:`~flowkit.App` that wires them. Steps 2 to 4 live in :mod:`.execute`; the
state table is in :mod:`flowkit.store.transitions`; ``docs/architecture.md``
draws the layers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .. import tracing
from .._ids import new_id
from ..errors import FlowNotFound, RunNotFound, SignalRejected
from ..graph import FlowGraph
from ..observability import Observers
from ..payloads import PayloadLimits
from ..stage import Stage
from ..status import RunStatus
from ..store import Created, Store
from ..store.db import utcnow
from .execute import Delivery, Finished, StepRunner
from .faults import fault
from .plan import gate, initial_rows
from .publisher import Outgoing, Publisher, RunRef
from .validation import check_input, check_signal

__all__ = ["Engine"]

log = logging.getLogger("flowkit.engine")


class Engine:
    """Runs the protocol: the only object that changes runs and steps.

    Parameters:
        flows: the flows it runs (their compiled graphs).
        store: the database.
        publisher: where messages go.
        limits: the size and depth limits of payloads.
        observers: hooks called after each state change.
        on_finished: called once when this process ends a run, after the
            ``run_finished`` hook: ``(run_id, flow, status)``.
        context_app: handed to each step as ``ctx.app`` (for user code only).
        llm_model: the default model of :mod:`flowkit.llm` steps.
        llm_prices: USD per million tokens per model, for the cost of LLM steps.
        worker_id: the worker recorded on the steps this engine claims
            (:attr:`worker_id`; ``App.start_worker`` sets it).
    """

    def __init__(
        self,
        flows: Iterable[FlowGraph],
        store: Store,
        publisher: Publisher,
        *,
        limits: PayloadLimits | None = None,
        observers: Observers | None = None,
        on_finished: Finished | None = None,
        context_app: Any = None,
        llm_model: str | None = None,
        llm_prices: dict[str, tuple[float, float]] | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.flows = {f.name: f for f in flows}
        self.store = store
        self.publisher = publisher
        self.limits = limits or PayloadLimits()
        self.observers = observers if observers is not None else Observers()
        self._on_finished = on_finished
        #: runs delivered step messages (claim → attempt → outcome → apply)
        self.steps = StepRunner(
            store,
            publisher,
            self.observers,
            self.run_finished,
            context_app,
            llm_model=llm_model,
            llm_prices=llm_prices,
            worker_id=worker_id,
        )

    @property
    def worker_id(self) -> str | None:
        """The worker (``flowkit_workers.id``) recorded on each step this engine claims."""
        return self.steps.worker_id

    @worker_id.setter
    def worker_id(self, value: str | None) -> None:
        self.steps.worker_id = value

    def flow(self, name: str) -> FlowGraph:
        """The flow called ``name``.

        Raises:
            FlowNotFound: it is not one of this engine's flows.
        """
        try:
            return self.flows[name]
        except KeyError:
            known = ", ".join(sorted(self.flows)) or "none"
            raise FlowNotFound(f"no flow {name!r} (known: {known})") from None

    def run_finished(self, run_id: str, flow: str, status: RunStatus) -> None:
        """This process ended a run: tell the observers, then the on-finished callback."""
        self.observers.emit("run_finished", flow=flow, status=status.value)
        if self._on_finished is not None:
            self._on_finished(run_id, flow, status)

    # -- submit ----------------------------------------------------------------
    def validate_input(self, flow: FlowGraph, value: Any) -> Any:
        """The JSON form of ``value`` after validation against the flow's first stage.

        Raises:
            InputValidationError: with the pydantic errors; nothing is stored or sent.
            PayloadTooLarge: over a payload limit.
        """
        return check_input(flow, value, self.limits)

    def submit(
        self, flow: FlowGraph, value: Any, *, key: str | None, priority: int | None = None
    ) -> tuple[str, bool]:
        """Store a new run and publish its first step(s); ``(run_id, created)``."""
        payload = self.validate_input(flow, value)
        return self.start(flow, payload, key=key, priority=priority)

    def start(
        self, flow: FlowGraph, payload: Any, *, key: str | None, priority: int | None = None
    ) -> tuple[str, bool]:
        """Store a run for an already validated payload (JSON form) and publish it.

        The ``flowkit.submit`` span is the run's root, a child of the caller's
        current span; its context is stored with the run and sent with its messages.
        The broker is checked first: with RabbitMQ down nothing is stored.
        """
        self.publisher.ready()
        run_id = new_id()
        attributes = {"flowkit.flow": flow.name, "flowkit.run_id": run_id, "flowkit.key": key}
        with tracing.span(
            f"flowkit.submit {flow.name}", kind="producer", attributes=attributes
        ) as s:
            created = self._store_run(flow, run_id, payload, key, priority, s.carrier)
            if not created.created:
                s.set("flowkit.run_id", created.run_id)
                s.set("flowkit.duplicate", True)
            self._publish_start(
                flow, created, RunRef(flow.name, created.run_id, key, priority, s.carrier)
            )
        return created.run_id, created.created

    def _store_run(
        self,
        flow: FlowGraph,
        run_id: str,
        payload: Any,
        key: str | None,
        priority: int | None,
        trace: dict[str, str] | None,
    ) -> Created:
        first, waiting, entry_waits = initial_rows(flow, payload)
        return self.store.runs.create(
            run_id=run_id,
            flow=flow.name,
            key=key,
            input=payload,
            first=first,
            waiting=waiting,
            deadline_ms=flow.timeout_ms,
            entry_waits=entry_waits,
            priority=priority,
            trace_context=trace,
        )

    def _publish_start(self, flow: FlowGraph, created: Created, run: RunRef) -> None:
        key = run.key
        if created.created:
            fault("submit-after-commit")
            self.publisher.publish(run, [Outgoing.of(s) for s in [*created.steps, *created.timers]])
            if flow.timeout_ms:
                self.publisher.publish_control("deadline", run, flow.timeout_ms)
        elif key is not None:
            # The same key again: most often a caller retrying after a BrokerError
            # (the run was stored, its first message not sent). Entry steps still
            # queued are published again; a copy that finds its step taken is a
            # duplicate the claim ignores, so this is safe even if the first went out.
            entries = [s.name for s in flow.entries]
            queued = self.store.runs.queued_steps(created.run_id, entries)
            if queued:
                self.publisher.publish(run, [Outgoing(i, n, q) for i, n, q in queued])

    # -- a worker thread -------------------------------------------------------
    def execute(self, flow: FlowGraph, stage: Stage[Any, Any], step_id: str, got: Delivery) -> None:
        """Run one delivered step message; see :class:`.execute.StepRunner`."""
        self.steps.execute(flow, stage, step_id, got)

    # -- control ---------------------------------------------------------------
    def signal(self, run_id: str, name: str, payload: Any) -> bool:
        """Deliver a signal; returns whether it opened a waiting step right away.

        Raises:
            RunNotFound, SignalRejected, InputValidationError
        """
        info = self.store.get_run(run_id)
        if info is None:
            raise RunNotFound(f"no run {run_id!r}")
        flow = self.flow(info.flow)
        waiting = flow.waits_for(name)
        if not waiting:
            known = sorted({s.wait_for for s in flow.steps.values() if s.wait_for})
            raise SignalRejected(
                f"no step of {flow.name!r} waits for signal {name!r} "
                f"(signals: {', '.join(known) or 'none'})"
            )
        stage = flow.steps[waiting[0]]
        data = check_signal(stage, name, payload, self.limits)  # None only if the type says so
        self.publisher.ready()  # nothing is stored while the broker is down
        # The run's trace goes on from its stored context; the caller's span is linked.
        attributes = {"flowkit.flow": flow.name, "flowkit.run_id": run_id, "flowkit.signal": name}
        with tracing.span(
            f"flowkit.signal {name}",
            parent=tracing.clean(info.trace_context),
            kind="producer",
            attributes=attributes,
            link_caller=True,
        ) as span:
            opened = self.store.control.deliver_signal(
                run_id, name, data, gate(flow, stage.name, -1)
            )
            span.set("flowkit.resumed", opened is not None)
            if opened is not None:
                run = RunRef(flow.name, run_id, info.key, info.priority, span.carrier)
                self.publisher.publish(run, [Outgoing.of(opened)])
        return opened is not None

    def cancel(self, run_id: str) -> bool:
        """Cancel a run; ``False`` if it was already over."""
        flow = self.store.control.cancel(run_id)
        if flow is not None:
            self.run_finished(run_id, flow, RunStatus.CANCELLED)
        return flow is not None

    def on_control(self, op: str, run: RunRef) -> None:
        """The control actor: enforce a run's deadline when its timer fires."""
        if op != "deadline":
            log.warning("unknown control message %r for run %s dropped", op, run.run_id)
            return
        state = self.store.control.run_deadline(run.run_id)
        if state is None or state[1] is None or state[0] not in _LIVE:
            return
        left = int((state[1] - utcnow()).total_seconds() * 1000)
        if left > 0:
            self.publisher.publish_control("deadline", run, left)
            return
        self._time_out_run(run.run_id)

    def _time_out_run(self, run_id: str) -> None:
        error = {"type": "RunTimeout", "message": "the run passed its deadline", "step": None}
        flow = self.store.control.time_out_run(run_id, error)
        if flow is not None:
            log.warning("run %s timed out", run_id)
            self.run_finished(run_id, flow, RunStatus.TIMED_OUT)

    # -- recovery --------------------------------------------------------------
    def recover(
        self, *, older_than: float = 60.0, limit: int = 1000, all_running: bool = False
    ) -> int:
        """Re-publish queued steps older than ``older_than`` seconds and expired running ones.

        Safe to run at any time and from several processes: a copy of a message
        for a step that is already claimed is ignored by the claim guard.
        Returns the number of steps published.

        Raises:
            BrokerError: the broker cannot be reached (checked first, in words).
        """
        self.publisher.ready()
        count = 0
        for run_id in self.store.control.overdue_runs(limit):
            self._time_out_run(run_id)
            count += 1
        for due in self.store.runs.due_steps(
            older_than=older_than, limit=limit, all_running=all_running
        ):
            run = RunRef(due.flow, due.run_id, due.key, due.priority, tracing.clean(due.trace))
            self.publisher.publish(run, [Outgoing(due.id, due.name, due.queue)])
            count += 1
        if count:
            log.info("recovery sweep re-published %d step(s)", count)
        return count


_LIVE = (RunStatus.PENDING.value, RunStatus.RUNNING.value, RunStatus.WAITING.value)
