"""The runtime protocol: submit, claim, complete, fail, advance, recover.

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
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from pydantic import ValidationError

from .. import redact
from .._ids import new_id
from ..context import Context
from ..errors import (
    BrokerError,
    InputValidationError,
    PermanentError,
    RetryAfter,
    RunNotFound,
    SignalRejected,
    StepTimeout,
    StoreError,
    WorkerLost,
)
from ..flows import Flow
from ..payloads import PayloadLimits
from ..redact import exception_texts, validation_summary
from ..stage import Stage, Stop
from ..store import NO_STOP as _NO_STOP
from ..store import Claim, ClaimLimits, Delayed, NewStep, Store
from ..store.repo import utcnow
from .batch import publish_many
from .faults import fault
from .plan import Plan, gate, initial_rows, plan_completion, plan_settled_failure
from .timeouts import time_limit

if TYPE_CHECKING:
    from ..app import App

__all__ = ["Engine", "Outgoing", "StepFailed"]

log = logging.getLogger("flowkit.engine")

#: How long a running step without a timeout is presumed alive.
DEFAULT_LEASE_MS = 3_600_000
_LEASE_MARGIN_MS = 30_000
_MAX_ERROR_MESSAGE = 4_000
_MAX_TRACEBACK = 16_000


class StepFailed(Exception):
    """Raised to Dramatiq after a step's final failure was recorded.

    It is in every flowkit actor's ``throws``, so Dramatiq does not retry it
    and dead-letters the message; the run's error lives in the database.
    """


@dataclass(frozen=True)
class Outgoing:
    """A committed step row to publish a message for (``delay_ms``: a timer)."""

    step_id: str
    name: str
    queue: str
    delay_ms: int | None = None

    @classmethod
    def of(cls, step: NewStep) -> Outgoing:
        return cls(step.id, step.name, step.queue, step.delay_ms)


#: The longest a timer message waits in the broker: Dramatiq holds delayed
#: messages unacknowledged in worker memory, and RabbitMQ closes consumers that
#: keep one past its consumer timeout (30 minutes by default). Longer timers
#: hop: the message wakes, the row says "not yet", a new message is sent.
MAX_HOP_MS = 10 * 60 * 1000
CONTROL_QUEUE = "flowkit.control"
CONTROL_ACTOR = "flowkit.control"


def _validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]


def _error_record(exc: BaseException, *, step: str, attempt: int) -> dict[str, Any]:
    # Redacted: no URL password, known key or secret of the step's input is stored.
    message, tb = exception_texts(exc, limit=30)
    return {
        "type": type(exc).__name__,
        "message": message[:_MAX_ERROR_MESSAGE],
        "traceback": tb[-_MAX_TRACEBACK:],
        "step": step,
        "attempt": attempt,
    }


def backoff_ms(stage: Stage[Any, Any], attempt: int) -> int:
    """Exponential backoff with jitter: ``min_backoff * 2**(attempt-1)``, capped, ±50 %."""
    assert stage.min_backoff_ms is not None and stage.max_backoff_ms is not None
    base = min(stage.max_backoff_ms, stage.min_backoff_ms * 2 ** max(0, attempt - 1))
    return int(base / 2 + random.uniform(0, base / 2))


class Engine:
    """Runs the protocol for one App: the only object that changes runs and steps."""

    def __init__(self, app: App, store: Store, broker: dramatiq.Broker) -> None:
        self.app = app
        self.store = store
        self.broker = broker
        self.actors: dict[tuple[str, str], dramatiq.Actor[Any, Any]] = {}

    # -- submit ----------------------------------------------------------------
    def validate_input(self, flow: Flow, value: Any) -> Any:
        """The JSON form of ``value`` after validation against the flow's first stage.

        Raises:
            InputValidationError: with the pydantic errors; nothing is stored or sent.
        """
        entry = flow.entry
        limits = PayloadLimits.of(self.app.settings)
        what = f"input for {flow.name!r}"
        limits.check_raw(value, what=what, stage=entry.name)
        try:
            typed = entry.input_adapter.validate_python(value)
        except ValidationError as exc:
            raise InputValidationError(
                f"input for {flow.name!r} does not match stage {entry.name!r}: "
                f"{exc.error_count()} validation error(s): "
                + "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                    for e in _validation_errors(exc)
                ),
                errors=_validation_errors(exc),
                stage=entry.name,
            ) from None
        return limits.json_form(entry.dump_input, typed, what=what, stage=entry.name)

    def submit(
        self, flow: Flow, value: Any, *, key: str | None, priority: int | None = None
    ) -> tuple[str, bool]:
        """Store a new run and publish its first step(s); ``(run_id, created)``."""
        payload = self.validate_input(flow, value)
        return self.start(flow, payload, key=key, priority=priority)

    def start(
        self, flow: Flow, payload: Any, *, key: str | None, priority: int | None = None
    ) -> tuple[str, bool]:
        """Store a run for an already validated payload (JSON form) and publish it."""
        first, waiting, entry_waits = initial_rows(flow, payload)
        created = self.store.create_run(
            run_id=new_id(),
            flow=flow.name,
            key=key,
            input=payload,
            first=first,
            waiting=waiting,
            deadline_ms=flow.timeout_ms,
            entry_waits=entry_waits,
            priority=priority,
        )
        if created.created:
            fault("submit-after-commit")
            out = [Outgoing.of(s) for s in [*first, *created.timers]]
            self.publish(flow.name, created.run_id, key, out, priority=priority)
            if flow.timeout_ms:
                self.publish_control("deadline", created.run_id, flow.timeout_ms)
        elif key is not None:
            # The same key again: most often a caller retrying after a BrokerError
            # (the run was stored, its first message not sent). Entry steps still
            # queued are published again; a copy that finds its step taken is a
            # duplicate the claim ignores, so this is safe even if the first went out.
            queued = self.store.queued_steps(created.run_id, [s.name for s in flow.entries])
            if queued:
                out = [Outgoing(i, n, q) for i, n, q in queued]
                self.publish(flow.name, created.run_id, key, out, priority=priority)
        return created.run_id, created.created

    def publish_control(self, op: str, run_id: str, delay_ms: int | None = None) -> None:
        """Send a message to the control actor (run deadlines), hopping long delays."""
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=CONTROL_QUEUE,
            actor_name=CONTROL_ACTOR,
            args=(),
            kwargs={"op": op, "run_id": run_id},
            options={},
        )
        try:
            hop = None if delay_ms is None else min(max(delay_ms, 0), MAX_HOP_MS)
            self.broker.enqueue(message, delay=hop)
        except (dramatiq.errors.BrokerError, OSError) as exc:
            raise BrokerError(
                f"run {run_id}: the {op} timer could not be published ({type(exc).__name__}); "
                "the recovery sweep enforces it"
            ) from exc

    def publish(
        self,
        flow: str,
        run_id: str,
        key: str | None,
        new: Sequence[Outgoing],
        *,
        priority: int | None = None,
    ) -> None:
        """Send one message per step; the rows are already committed.

        Messages are addressed by name (``<flow>.<step>`` on the step's queue),
        so a process that does not import the flows (``flowkit recover``) can
        publish them too.
        """
        batch: list[tuple[dramatiq.Message[Any], int | None]] = [
            (
                dramatiq.Message(
                    queue_name=s.queue,
                    actor_name=f"{flow}.{s.name}",
                    args=(),
                    kwargs={"step_id": s.step_id, "run_id": run_id, "key": key},
                    # A run's RabbitMQ priority travels with each of its messages.
                    options={} if priority is None else {"broker_priority": priority},
                ),
                None if not s.delay_ms else min(s.delay_ms, MAX_HOP_MS),
            )
            for s in new
        ]
        try:
            publish_many(self.broker, batch)  # a fan-out's items: one round trip
        except (dramatiq.errors.BrokerError, OSError) as exc:
            names = sorted({s.name for s in new})
            raise BrokerError(
                f"run {run_id} is recorded but its step(s) {', '.join(names)} could not be "
                f"published ({type(exc).__name__}); the recovery sweep will publish them"
            ) from exc

    # -- a worker thread -------------------------------------------------------
    def execute(
        self, flow: Flow, stage: Stage[Any, Any], step_id: str, run_id: str, key: str | None
    ) -> None:
        """Run one delivered step message (called by the step's Dramatiq actor).

        If the database or the broker fails underneath, the message is sent
        again later (the same message id, so a redelivery can resume) rather
        than dropped: the step runs at least once, and is recorded once.
        """
        try:
            self._execute(flow, stage, step_id, run_id, key)
        except (StoreError, BrokerError) as exc:
            delay = random.randint(1_000, 5_000)
            log.warning(
                "step %s of run %s: %s; the message comes back in %.1fs",
                stage.name,
                run_id,
                exc,
                delay / 1000,
            )
            raise dramatiq.Retry(str(exc), delay=delay) from exc

    def _execute(
        self, flow: Flow, stage: Stage[Any, Any], step_id: str, run_id: str, key: str | None
    ) -> None:
        message = CurrentMessage.get_current_message()
        message_id = message.message_id if message is not None else new_id()
        priority = message.options.get("broker_priority") if message is not None else None
        lease = (stage.timeout_ms + _LEASE_MARGIN_MS) if stage.timeout_ms else DEFAULT_LEASE_MS
        limits = self._limits(flow, stage, step_id) if stage.limits.any else None
        claim = self.store.claim(
            step_id,
            message_id,
            lease_ms=lease,
            starts_run=not flow.parents(stage.name),
            limits=limits,
            # Only a copy that comes back after its holder stopped may take over a
            # running step: RabbitMQ's redelivery after the consumer went away, or
            # Dramatiq's re-send after this engine gave up on the database or
            # broker (see execute). Not a second copy published with the same id.
            redelivered=bool(getattr(message, "redelivered", False))
            or bool(message is not None and message.options.get("retries", 0) > 0),
        )
        if claim is None:
            self._not_claimed(flow, step_id, message_id, key)
            return
        if isinstance(claim, Delayed):
            # Over a rate or concurrency limit: come back later. Not a failure,
            # and not a retry: the attempt counter does not move.
            self.app.observers.emit(
                "step_delayed",
                flow=flow.name,
                step=stage.name,
                queue=stage.queue,
                seconds=claim.ms / 1000,
            )
            log.debug(
                "step %s of run %s delayed %dms (%s)", stage.name, run_id, claim.ms, claim.reason
            )
            retry = Outgoing(step_id, stage.name, stage.queue, claim.ms)
            self.publish(flow.name, run_id, key, [retry], priority=priority)
            return
        if claim.attempts > stage.retries + 1:
            # Only a takeover gets here: every earlier attempt ended without an
            # outcome (its process died, or lost the database, each time).
            lost = WorkerLost(
                f"step {stage.name!r} was started {claim.attempts - 1} times and its worker "
                "stopped before recording an outcome each time; quarantined (not run again)"
            )
            self._final_failure(flow, stage, step_id, claim, lost, message_id)
            raise StepFailed(str(lost))
        try:
            value = stage.parse_input(claim.input)
        except ValidationError as exc:
            err = InputValidationError(
                f"stored input does not match stage {stage.name!r}: {validation_summary(exc)}",
                errors=_validation_errors(exc),
                stage=stage.name,
            )
            self._final_failure(flow, stage, step_id, claim, err, message_id)
            raise StepFailed(str(err)) from None
        redact.note(stage.secrets_in(value))  # hidden from logs and errors while it runs
        tenant = getattr(value[0] if stage.wait_for else value, "tenant_id", None)
        suffix = "" if claim.item is None else f"[{claim.item}]"
        ctx = Context(
            run_id=run_id,
            flow=flow.name,
            step=stage.name,
            attempt=claim.attempts,
            idempotency_key=f"{run_id}:{stage.name}{suffix}",
            key=key,
            tenant_id=tenant if isinstance(tenant, str) else None,
            item=claim.item,
            app=self.app,
            # Earlier attempts' LLM spending carries on: the step's usage is a total.
            usage=dict(claim.usage or {}),
        )
        observe = self.app.observers.emit
        observe(
            "step_started",
            flow=flow.name,
            step=stage.name,
            queue=stage.queue,
            attempt=claim.attempts,
        )
        began = time.monotonic()
        try:
            with time_limit(stage.timeout_ms, f"step {stage.name!r}"):
                result = stage.invoke(value, ctx)
            if isinstance(result, Stop):
                out = _jsonable(result.output)
                output: Any = {"stopped": True, "reason": result.reason, "output": out}
                plan, stop = Plan(), out
            else:
                output = stage.dump_output(stage.output_adapter.validate_python(result))
                plan, stop = plan_completion(flow, stage.name, claim.item, output), _NO_STOP
        except (Exception, StepTimeout) as exc:
            retried = claim.attempts <= stage.retries and not isinstance(
                exc, (ValidationError, PermanentError)
            )
            observe(
                "step_finished",
                flow=flow.name,
                step=stage.name,
                queue=stage.queue,
                outcome="retried" if retried else "failed",
                seconds=time.monotonic() - began,
                usage=ctx.usage or None,
            )
            self._attempt_failed(flow, stage, step_id, claim, exc, message_id, ctx.usage)
            return
        fault("before-commit")
        ready = self.store.complete(
            step_id=step_id,
            message_id=message_id,
            run_id=run_id,
            output=output,
            inserts=plan.inserts,
            gates=plan.gates,
            end=plan.end,
            stop=stop,
            stop_reason=result.reason if isinstance(result, Stop) else None,
            usage=ctx.usage or None,
            skipped=flow.remaining(stage.name) if stop is not _NO_STOP else (),
        )
        if ready is None:
            log.info("step %s of run %s was already finished; result discarded", stage.name, run_id)
            return
        observe(
            "step_finished",
            flow=flow.name,
            step=stage.name,
            queue=stage.queue,
            outcome="succeeded",
            seconds=time.monotonic() - began,
            usage=ctx.usage or None,
        )
        fault("after-commit")
        if ready:
            out = [Outgoing.of(s) for s in ready]
            self.publish(flow.name, run_id, key, out, priority=priority)
        fault("after-publish")
        if plan.end is not None or stop is not _NO_STOP:
            self.app._notify_finished(run_id)

    def _limits(self, flow: Flow, stage: Stage[Any, Any], step_id: str) -> ClaimLimits:
        lim = stage.limits
        value: Any = None
        if lim.concurrency_key or lim.rate_key:
            value = stage.parse_input(self.store.step_input(step_id))
            if stage.wait_for:
                value = value[0]
        scope = f"{flow.name}.{stage.name}"
        key = None
        if lim.concurrency:
            key = f"{scope}:{lim.concurrency_key(value)}" if lim.concurrency_key else scope
        rates = []
        if lim.queue_rate:
            rates.append((f"queue:{lim.queue}", lim.queue_rate.limit, lim.queue_rate.window_ms))
        if lim.rate:
            rkey = f"{scope}:{lim.rate_key(value)}" if lim.rate_key else scope
            rates.append((rkey[:200], lim.rate.limit, lim.rate.window_ms))
        return ClaimLimits(
            queue=lim.queue,
            queue_concurrency=lim.queue_concurrency,
            key=key[:200] if key else None,
            key_concurrency=lim.concurrency,
            rates=tuple(rates),
        )

    def _attempt_failed(
        self,
        flow: Flow,
        stage: Stage[Any, Any],
        step_id: str,
        claim: Claim,
        exc: BaseException,
        message_id: str,
        usage: dict[str, Any] | None = None,
    ) -> None:
        if claim.attempts <= stage.retries and not isinstance(
            exc, (ValidationError, PermanentError)
        ):
            delay = backoff_ms(stage, claim.attempts)
            if isinstance(exc, RetryAfter) and exc.delay_ms is not None:
                delay = exc.delay_ms
            error = _error_record(exc, step=stage.name, attempt=claim.attempts)
            due = utcnow() + timedelta(milliseconds=delay)
            self.store.schedule_retry(step_id, error, due, usage=usage or None)
            log.warning(
                "step %s of run %s failed (attempt %d of %d): %s: %s; retrying in %.1fs",
                stage.name,
                claim.run_id,
                claim.attempts,
                stage.retries + 1,
                type(exc).__name__,
                _short(exc),
                delay / 1000,
            )
            # The row holds the due time; a longer wait hops (see MAX_HOP_MS).
            raise dramatiq.Retry(f"{type(exc).__name__}", delay=min(delay, MAX_HOP_MS)) from exc
        self._final_failure(flow, stage, step_id, claim, exc, message_id, usage)
        raise StepFailed(f"{type(exc).__name__}: {_short(exc)}") from exc

    def _final_failure(
        self,
        flow: Flow,
        stage: Stage[Any, Any],
        step_id: str,
        claim: Claim,
        exc: BaseException,
        message_id: str,
        usage: dict[str, Any] | None = None,
    ) -> None:
        error = _error_record(exc, step=stage.name, attempt=claim.attempts)
        settled = None if claim.item is None else plan_settled_failure(flow, stage.name)
        if settled is not None:
            # The join takes Settled[...]: this item's failure is an input, not the end.
            ready = self.store.complete(
                step_id=step_id,
                message_id=message_id,
                run_id=claim.run_id,
                output=None,
                gates=settled.gates,
                failed=error,
                usage=usage or None,
            )
            log.warning(
                "item %s of step %s in run %s failed after %d attempt(s): %s: %s",
                claim.item,
                stage.name,
                claim.run_id,
                claim.attempts,
                type(exc).__name__,
                _short(exc),
            )
            if ready:
                current = CurrentMessage.get_current_message()
                self.publish(
                    flow.name,
                    claim.run_id,
                    current.kwargs.get("key") if current is not None else None,
                    [Outgoing.of(s) for s in ready],
                    priority=current.options.get("broker_priority") if current else None,
                )
            return
        if self.store.fail(step_id, claim.run_id, error, usage=usage or None):
            log.error(
                "run %s of %s failed in step %s after %d attempt(s): %s: %s",
                claim.run_id,
                flow.name,
                stage.name,
                claim.attempts,
                type(exc).__name__,
                _short(exc),
                # An expected refusal (bad data) needs no traceback; the rest do.
                exc_info=None
                if isinstance(
                    exc, (PermanentError, InputValidationError, ValidationError, WorkerLost)
                )
                else (type(exc), exc, exc.__traceback__),
            )
            self.app._notify_finished(claim.run_id, flow=flow.name, status="failed")

    def _not_claimed(self, flow: Flow, step_id: str, message_id: str, key: str | None) -> None:
        """A message whose step it cannot run now: a duplicate, an early timer, a deadline."""
        row = self.store.control.step_row(step_id)
        if row is None:
            log.warning("message for unknown step %s acknowledged and dropped", step_id)
            return
        now = utcnow()
        if row.status in ("succeeded", "failed") and row.claimed_by == message_id:
            # A redelivery of the very message that completed this step: its
            # worker may have died before publishing what follows.
            queued = self.store.queued_steps(row.run_id, flow.children(row.name))
            if queued:
                log.info(
                    "re-publishing %d successor(s) of step %s in run %s",
                    len(queued),
                    row.name,
                    row.run_id,
                )
                self.publish(flow.name, row.run_id, key, [Outgoing(i, n, q) for i, n, q in queued])
            return
        stage = flow.steps.get(row.name)
        due = row.scheduled_at
        if stage is not None and due is not None and row.status in ("queued", "waiting"):
            left = int((due - now).total_seconds() * 1000)
            if left > 0:  # a timer hop: not yet
                self.publish(
                    flow.name, row.run_id, key, [Outgoing(step_id, row.name, stage.queue, left)]
                )
                return
            if row.status == "waiting" and stage.wait_for and row.pending == 1:
                self._signal_timed_out(flow, stage, step_id, row.run_id, key)
                return
        log.debug(
            "duplicate message for step %s (%s) of run %s ignored", row.name, row.status, row.run_id
        )

    def _signal_timed_out(
        self, flow: Flow, stage: Stage[Any, Any], step_id: str, run_id: str, key: str | None
    ) -> None:
        seconds = (stage.wait_timeout_ms or 0) / 1000
        exc = StepTimeout(f"step {stage.name!r} waited {seconds:g}s for signal {stage.wait_for!r}")
        error = _error_record(exc, step=stage.name, attempt=0)
        error.pop("traceback", None)
        outcome = self.store.control.time_out_wait(
            step_id,
            run_id,
            gate(flow, stage.name, 0),
            run_without=stage.signal_optional,
            error=error,
        )
        if isinstance(outcome, NewStep):
            log.info(
                "signal %r for run %s timed out; running %s without it",
                stage.wait_for,
                run_id,
                stage.name,
            )
            self.publish(flow.name, run_id, key, [Outgoing.of(outcome)])
        elif outcome:
            log.warning("run %s failed: %s", run_id, exc)
            self.app._notify_finished(run_id, flow=flow.name, status="failed")

    # -- control ---------------------------------------------------------------
    def signal(self, run_id: str, name: str, payload: Any) -> bool:
        """Deliver a signal; returns whether it opened a waiting step right away.

        Raises:
            RunNotFound, SignalRejected, InputValidationError
        """
        info = self.store.get_run(run_id)
        if info is None:
            raise RunNotFound(f"no run {run_id!r}")
        flow = self.app.flow(info.flow)
        waiting = flow.waits_for(name)
        if not waiting:
            known = sorted({s.wait_for for s in flow.steps.values() if s.wait_for})
            raise SignalRejected(
                f"no step of {flow.name!r} waits for signal {name!r} "
                f"(signals: {', '.join(known) or 'none'})"
            )
        stage = flow.steps[waiting[0]]
        limits = PayloadLimits.of(self.app.settings)
        what = f"signal {name!r}"
        limits.check_raw(payload, what=what, stage=stage.name)
        try:
            typed = stage.signal_adapter.validate_python(payload)
        except ValidationError as exc:
            raise InputValidationError(
                f"signal {name!r} does not match {stage.name!r}'s payload type: "
                + "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                    for e in _validation_errors(exc)
                ),
                errors=_validation_errors(exc),
                stage=stage.name,
            ) from None
        data = limits.json_form(stage.dump_signal, typed, what=what, stage=stage.name)
        opened = self.store.control.deliver_signal(run_id, name, data, gate(flow, stage.name, -1))
        if opened is not None:
            self.publish(flow.name, run_id, info.key, [Outgoing.of(opened)])
        return opened is not None

    def cancel(self, run_id: str) -> bool:
        """Cancel a run; ``False`` if it was already over."""
        done = self.store.control.cancel(run_id)
        if done:
            self.app._notify_finished(run_id, flow="", status="cancelled")
        return done

    def on_control(self, op: str, run_id: str) -> None:
        """The control actor: enforce a run's deadline when its timer fires."""
        if op != "deadline":
            log.warning("unknown control message %r for run %s dropped", op, run_id)
            return
        state = self.store.control.run_deadline(run_id)
        if state is None or state[1] is None or state[0] not in ("pending", "running", "waiting"):
            return
        left = int((state[1] - utcnow()).total_seconds() * 1000)
        if left > 0:
            self.publish_control("deadline", run_id, left)
            return
        self._time_out_run(run_id)

    def _time_out_run(self, run_id: str) -> None:
        error = {"type": "RunTimeout", "message": "the run passed its deadline", "step": None}
        if self.store.control.time_out_run(run_id, error):
            log.warning("run %s timed out", run_id)
            self.app._notify_finished(run_id, flow="", status="timed_out")

    # -- recovery --------------------------------------------------------------
    def recover(
        self, *, older_than: float = 60.0, limit: int = 1000, all_running: bool = False
    ) -> int:
        """Re-publish queued steps older than ``older_than`` seconds and expired running ones.

        Safe to run at any time and from several processes: a copy of a message
        for a step that is already claimed is ignored by the claim guard.
        Returns the number of steps published.
        """
        count = 0
        for run_id in self.store.control.overdue_runs(limit):
            self._time_out_run(run_id)
            count += 1
        for due in self.store.due_steps(
            older_than=older_than, limit=limit, all_running=all_running
        ):
            self.publish(
                due.flow,
                due.run_id,
                due.key,
                [Outgoing(due.id, due.name, due.queue)],
                priority=due.priority,
            )
            count += 1
        if count:
            log.info("recovery sweep re-published %d step(s)", count)
        return count


def _short(exc: BaseException) -> str:
    text = validation_summary(exc) if isinstance(exc, ValidationError) else redact.redact(str(exc))
    return text if len(text) <= 300 else text[:297] + "..."


def _jsonable(value: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(Any).dump_python(value, mode="json")
