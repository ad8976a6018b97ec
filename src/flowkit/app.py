"""``App``: the front that wires flows, a broker, a store and an Engine together.

Like httpx's ``Client`` wiring a transport, it builds the parts on first use
(:mod:`flowkit.store`, a broker and its :mod:`~flowkit.runtime.publisher`, the
:class:`~flowkit.runtime.engine.Engine`, the actors) and hands them to each
other; the runtime never reaches back into it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import starting
from ._types import parse_duration_ms
from .config import Settings, mask_url
from .errors import ConfigurationError, FlowNotFound, RunNotFound
from .flows import Flow
from .inprocess import InProcess
from .names import validate_name
from .observability import Observer, Observers
from .records import RetryPreview, RunInfo
from .run import Finishes, Run
from .status import RunStatus

if TYPE_CHECKING:
    import dramatiq

    from .runtime.engine import Engine
    from .runtime.sweep import Presence
    from .store import Store
    from .store.outbox import Caller

__all__ = ["App", "Run"]

log = logging.getLogger("flowkit")

DEFAULT_THREADS = 8


class App:
    """Binds flows to a broker and a store. Creating one connects to nothing.

    The broker and the database are opened on first use, from the arguments,
    ``FLOWKIT_BROKER_URL`` / ``FLOWKIT_DATABASE_URL`` or ``[tool.flowkit]`` of pyproject.toml
    (default ``memory://`` and ``sqlite:///flowkit.db``; see :meth:`Settings.resolve`)::

        app = flowkit.App("exceptions", flows=[pipeline])
        run = pipeline.submit(RawException(...), key="tenant-1:exc-42")
        run.result(timeout=30)

    With the in-process ``memory://`` broker, the first submit starts worker
    threads inside this process (``embedded_worker=False`` turns that off).

    Parameters:
        name: the application's name (used in logs).
        flows: the pipelines and workflows this App runs.
        broker_url: ``memory://`` or ``amqp://user:password@host:5672/vhost`` (a cluster: a list).
        database_url: ``sqlite:///file.db`` or ``postgresql://user@host/db``.
        threads: worker threads of the embedded worker, and the size of the
            database connection pool.
        embedded_worker: start in-process workers on first submit; default:
            only with ``memory://``.
        llm_model: the default chat model of :mod:`flowkit.llm` steps.
        llm_prices: USD per million prompt and completion tokens per model,
            to record each LLM step's cost.
        observers: :class:`~flowkit.observability.Observer` hooks (metrics, tracing).
        max_priority: enable RabbitMQ message priorities 0..N for ``submit(priority=)``;
            queues are then declared with ``x-max-priority`` (an existing queue
            declared without it must be deleted first).
        queue_type: ``"quorum"``: replicated RabbitMQ quorum queues (``$FLOWKIT_QUEUE_TYPE``).
        signing_key: sign every message with HMAC-SHA256 and refuse unsigned or
            forged ones: a key, or a list of accepted keys whose first signs
            (default: ``$FLOWKIT_SIGNING_KEY``, comma-separated). Per process:
            the App that opens its broker last decides.
        max_payload_bytes: the largest payload (as compact JSON) that ``submit``,
            ``emit`` and ``signal`` accept (default ``$FLOWKIT_MAX_PAYLOAD_BYTES``
            or 1 MiB).
        max_payload_depth: the deepest nesting of lists and objects in a payload
            (default ``$FLOWKIT_MAX_PAYLOAD_DEPTH`` or 32).
        timer_hop: the longest one timer message waits in the broker (``"10m"``,
            the default); a longer timer is re-sent in hops of this length.

    Raises:
        FlowDefinitionError: two flows share a name, or a flow belongs to another App.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        name: str,
        flows: Iterable[Flow] = (),
        *,
        broker_url: str | Sequence[str] | None = None,
        database_url: str | None = None,
        threads: int = DEFAULT_THREADS,
        embedded_worker: bool | None = None,
        llm_model: str | None = None,
        llm_prices: dict[str, tuple[float, float]] | None = None,
        observers: Iterable[Observer] = (),
        max_priority: int | None = None,
        signing_key: str | Sequence[str] | None = None,
        max_payload_bytes: int | None = None,
        max_payload_depth: int | None = None,
        timer_hop: str | float | None = None,
        queue_type: str | None = None,
    ) -> None:
        self.name = validate_name(name, what="App name")
        self._flows = starting.bind_flows(self, flows)
        self._broker_url = broker_url
        self._database_url = database_url
        self._security: dict[str, Any] = {
            "signing_key": signing_key,
            "max_payload_bytes": max_payload_bytes,
            "max_payload_depth": max_payload_depth,
            "queue_type": queue_type,
        }
        self.max_priority = starting.check_max_priority(max_priority, queue_type)
        #: hooks called by the runtime (metrics, tracing); see :mod:`flowkit.observability`
        self.observers = Observers(observers)
        #: default model for :mod:`flowkit.llm` (else ``$FLOWKIT_LLM_MODEL``)
        self.llm_model = llm_model
        #: USD per million tokens, ``{model: (prompt, completion)}``, for cost on steps
        self.llm_prices = dict(llm_prices or {})
        self.threads = threads
        self.timer_hop_ms = parse_duration_ms(timer_hop, what=f"App {name!r} timer_hop")
        self._embedded_worker = embedded_worker
        self._create_schema = True
        self._settings: Settings | None = None
        self._store: Store | None = None
        self._broker: dramatiq.Broker | None = None
        self._engine: Engine | None = None
        self._local = InProcess()  # the in-process worker
        self._lock = threading.RLock()
        #: wakes ``Run.wait`` when this process finishes a run
        self.finishes = Finishes()

    # -- configuration ---------------------------------------------------------
    @property
    def flows(self) -> list[Flow]:
        return list(self._flows.values())

    def flow(self, name: str) -> Flow:
        """The flow called ``name``.

        Raises:
            FlowNotFound: no such flow (the message lists the known ones).
        """
        try:
            return self._flows[name]
        except KeyError:
            known = ", ".join(sorted(self._flows)) or "none"
            raise FlowNotFound(f"App {self.name!r} has no flow {name!r} (known: {known})") from None

    def configure(
        self,
        *,
        broker_url: str | None = None,
        database_url: str | None = None,
        threads: int | None = None,
        embedded_worker: bool | None = None,
        create_schema: bool | None = None,
    ) -> None:
        """Override settings before first use (the CLI's ``--broker-url`` and friends).

        ``embedded_worker`` and ``create_schema`` (``False``: check, never create, the
        schema) may change any time; the rest only before the App opens its broker or store.

        Raises:
            ConfigurationError: the App already opened its broker or store.
        """
        with self._lock:
            if embedded_worker is not None:
                self._embedded_worker = embedded_worker
            self._create_schema = self._create_schema if create_schema is None else create_schema
            if broker_url is None and database_url is None and threads is None:
                return
            if self._store is not None or self._broker is not None:
                raise ConfigurationError(
                    f"App {self.name!r} is already running; configure it first"
                )
            self._broker_url = self._broker_url if broker_url is None else broker_url
            self._database_url = self._database_url if database_url is None else database_url
            self.threads = self.threads if threads is None else threads
            self._settings = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.resolve(
                self._broker_url, self._database_url, **self._security
            )
        return self._settings

    def describe(self) -> str:
        """One line naming the broker and database, passwords masked."""
        s = self.settings
        return f"broker={mask_url(s.broker_url)} database={mask_url(s.database_url)}"

    # -- lazily opened resources ----------------------------------------------
    @property
    def store(self) -> Store:
        """The store, opened (and its schema created or upgraded) on first use."""
        with self._lock:
            if self._store is None:
                from .store import Store  # SQLAlchemy loads with the first store

                s, size = self.settings, self.threads + 2
                self._store = Store.open(
                    s.database_url,
                    pool_size=size,
                    create=self._create_schema,
                    pooler=s.database_pooler,
                    listen_url=s.listen_url,
                )
            return self._store

    @property
    def broker(self) -> dramatiq.Broker:
        """The Dramatiq broker, with one actor per step of every flow."""
        self.engine  # noqa: B018 - opens the broker and declares the actors
        assert self._broker is not None
        return self._broker

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                from .wiring import build_runtime  # the runtime loads on first use

                self._engine, self._broker = build_runtime(self)
            return self._engine

    def queues(self) -> set[str]:
        """Every queue a step of this App's flows is sent to."""
        return set().union(*(f.compile().queues() for f in self.flows)) if self._flows else set()

    def signal(self, run_id: str, name: str, data: Any = None) -> bool:
        """Deliver signal ``name`` with payload ``data`` to a run.

        If a step waits for it, the step runs with the payload; if the step is
        not waiting yet, the signal is kept until it is. A signal without a
        payload (``data`` left out, or ``None``) is refused unless the payload's
        type lists ``None`` (``Note | None``).

        Returns:
            whether a waiting step was released right away.

        Raises:
            RunNotFound: no such run.
            SignalRejected: the run is over, no step waits for ``name``, the
                signal was already delivered, or the step's wait timed out.
            InputValidationError: ``data`` is missing or does not match the signal's type.

        .. versionchanged:: 0.2
           a missing payload is refused unless the type lists ``None``; a signal
           after its wait timed out is refused.
        """
        return self.engine.signal(run_id, name, data)

    def retry(self, run_id: str, *, from_step: str | None = None) -> list[str]:
        """Re-run a finished run from its failed step (or ``from_step``).

        The steps before it keep their stored outputs and do not run again; a
        failed fan-out item runs again with the other unfinished items while
        the items that succeeded are kept.

        Returns:
            the names of the steps queued again.

        Raises:
            RunNotFound: no such run.
            RunStateError: the run is still live, or has no failed step and no
                ``from_step`` was given.
            NotFoundError: ``from_step`` is not a step of the run's flow.
        """
        from .runtime.redrive import redrive  # the runtime loads on first use

        names = redrive(self.engine, run_id, from_step)
        self._maybe_start_embedded()
        return names

    def retry_preview(self, run_id: str, *, from_step: str | None = None) -> RetryPreview:
        """What :meth:`retry` would do, without doing it: the steps that would run again
        and those whose stored outputs would be reused. Raises as :meth:`retry` does.

        .. versionadded:: 0.2
        """
        from .runtime.redrive import plan_redrive  # the runtime loads on first use

        return plan_redrive(self.engine, run_id, from_step).preview()

    def cancel(self, run_id: str) -> bool:
        """Cancel a run: queued and waiting steps are cancelled, running ones finish
        their attempt (they can check ``ctx.cancelled``) and their results are dropped.

        Returns:
            ``False`` if the run had already ended.

        Raises:
            RunNotFound: no such run.
        """
        return self.engine.cancel(run_id)

    # -- runs ------------------------------------------------------------------
    def submit(
        self,
        flow: Flow | str,
        input: Any,
        *,
        key: str | None = None,
        priority: int | None = None,
        connection: Caller | None = None,
    ) -> Run:
        """Start a run: validate ``input``, store the run, then publish its first step.

        A second submit with the same ``key`` (per flow) returns the existing
        run; if that run's first steps are still queued (the first submit may
        have raised ``BrokerError`` after storing it), they are published again,
        so retrying a failed submit with its key is safe and completes it.

        Parameters:
            flow: a flow of this App, or its name.
            input: a value of the first stage's input type (a model or a dict).
            key: an idempotency key, e.g. ``"tenant-1:exc-42"``.
            priority: RabbitMQ priority of every message of the run, 0..``max_priority``
                (higher first); needs ``App(max_priority=N)``.
            connection: your SQLAlchemy ``Connection`` or ``Session`` on the store's database:
                the run is stored in its transaction (see docs/transactional-submit.md).

        Returns:
            a :class:`Run` handle; ``run.created`` says whether this call made it.

        Raises:
            InputValidationError: ``input`` does not validate; nothing was stored or sent.
            ConfigurationError: ``connection`` is on another database; nothing was stored.
            FlowNotFound: no flow of that name.
            BrokerError: the run is stored but its first message could not be sent
                (``flowkit recover`` or the next ``flowkit dev`` publishes it).
            StoreError: the database is unavailable.
        """
        return starting.submit(self, flow, input, key=key, priority=priority, connection=connection)

    def submit_many(
        self,
        flow: Flow | str,
        inputs: Iterable[Any],
        *,
        keys: Iterable[str] | None = None,
        priority: int | None = None,
        connection: Caller | None = None,
    ) -> list[Run]:
        """Start one run per input as :meth:`submit` does, in one transaction and one batch
        of publishes. Every input is validated first: if any is invalid, nothing is stored
        or sent. A key that already names a run returns that run, as :meth:`submit` does, so
        a batch that raised ``BrokerError`` may be submitted again with the same keys.

        Parameters:
            flow: a flow of this App, or its name.
            inputs: values of the first stage's input type (models or dicts).
            keys: one idempotency key per input, all different; or ``None``.
            priority: RabbitMQ priority of every message of the runs, as for :meth:`submit`.
            connection: store the runs in your transaction, as for :meth:`submit`.

        Returns:
            one :class:`Run` per input, in order; ``run.created`` says whether it is new.

        Raises:
            InputValidationError: ``errors`` holds the errors of every invalid input, each
                ``loc`` starting with the input's index; nothing was stored or sent.
            ConfigurationError: not one valid key per input, a key given twice, or an
                invalid ``priority``.
            FlowNotFound, BrokerError, StoreError: as for :meth:`submit` (after the commit,
                ``BrokerError`` means the runs are stored and recovery sends them).

        .. versionadded:: 0.3
        """
        return starting.submit_many(
            self, flow, inputs, keys=keys, priority=priority, connection=connection
        )

    def emit(
        self, event: str, payload: Any, *, key: str | None = None, connection: Caller | None = None
    ) -> list[Run]:
        """Start every flow subscribed to ``event`` (``Workflow(on=...)``) with ``payload``.

        The payload is validated against each subscriber's input type first;
        if any rejects it, nothing is started.

        Parameters:
            event: the event's name, e.g. ``"loan:application:uploaded"``.
            payload: the input for each subscribed flow.
            key: an idempotency key, applied per flow.
            connection: store the runs in your transaction, as for :meth:`submit`.

        Returns:
            one :class:`Run` per subscribed flow.

        Raises:
            EventNotSubscribed: no flow subscribes to ``event``.
            InputValidationError: a subscriber rejects the payload; nothing started.
        """
        return starting.emit(self, event, payload, key=key, connection=connection)

    def events(self) -> dict[str, list[str]]:
        """Each event name and the flows it starts."""
        return starting.events(self.flows)

    def run(self, run_id: str) -> Run:
        """A handle on an existing run.

        Raises:
            RunNotFound: no run with that id.
        """
        info = self.store.get_run(run_id)
        if info is None:
            raise RunNotFound(f"no run {run_id!r}")
        return Run(self, run_id, info.flow, created=False)

    def runs(
        self, *, flow: str | None = None, status: str | RunStatus | None = None, limit: int = 50
    ) -> list[RunInfo]:
        """The newest runs, optionally of one flow and/or one status."""
        st = RunStatus(status).value if status is not None else None
        return self.store.list_runs(flow=flow, status=st, limit=limit)

    def recover(
        self, *, older_than: float = 60.0, all_running: bool = False, force: bool = False
    ) -> int:
        """One pass of the workers' recovery sweep; returns the steps published and runs ended.

        See :meth:`Engine.recover <flowkit.runtime.engine.Engine.recover>`: ``force``
        re-publishes every queued step older than ``older_than`` seconds whatever the
        evidence; ``all_running=True`` treats every running step as abandoned.
        """
        return self.engine.recover(older_than=older_than, all_running=all_running, force=force)

    # -- in-process workers ----------------------------------------------------
    def _maybe_start_embedded(self) -> None:
        if starting.wants_embedded(self):
            self.start_worker()

    def start_worker(
        self,
        *,
        queues: Iterable[str] | None = None,
        threads: int | None = None,
        chain: bool = True,
    ) -> dramatiq.Worker:
        """Start Dramatiq worker threads for this App inside this process.

        Used by ``flowkit dev``, the embedded default and tests; ``flowkit
        worker`` runs the same thing in dedicated processes. Every worker also
        serves flowkit's control queue (run deadlines), and registers itself in
        the database (``store.workers``), beating every ``$FLOWKIT_HEARTBEAT_SECONDS``
        (5) seconds and sweeping (:mod:`flowkit.runtime.sweep`); its claims record its id.
        A step whose successor is on a queue it serves runs that successor next in the
        same thread, unless ``chain=False`` (``flowkit worker --no-chain``).
        """
        with self._lock:
            return self._local.start(self, queues=queues, threads=threads, chain=chain)

    def stop_worker(self, *, timeout: float = 30.0) -> None:
        """Stop the in-process worker, letting running steps finish within ``timeout``,
        then its heartbeat (its row is marked stopped)."""
        with self._lock:
            local, self._local = self._local, InProcess()
        local.stop(timeout)

    @property
    def _beat(self) -> Presence | None:  # the in-process worker's row, heartbeat and sweeper
        return self._local.presence

    def close(self) -> None:
        """Stop the in-process worker and close broker and database connections."""
        self.stop_worker()
        self.finishes.close()  # the listener of Run.wait, if one started
        with self._lock:
            if self._engine is not None:  # pending messages out first (bounded), then the broker
                self._engine.publisher.close()
            if self._broker is not None:
                self._broker.close()
            if self._store is not None:
                self._store.dispose()
            self._broker = self._engine = self._store = None

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<App {self.name} flows={list(self._flows)}>"


Flow.default_app = starting.default_app
