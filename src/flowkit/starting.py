"""How an :class:`~flowkit.App` starts runs: ``submit``, ``submit_many`` and ``emit``.

The App's methods carry the documentation and call these. Each checks what the
caller passed (the flow, the keys and the priority, the flows an event starts),
hands the work to the :class:`~flowkit.runtime.engine.Engine`, which validates the
inputs, stores the runs and publishes them, and wraps what it started in
:class:`~flowkit.Run` handles. With ``connection=`` the inputs are validated the same
way, then the runs are stored in the caller's transaction
(:mod:`flowkit.runtime.outbox`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .config import check_queue_type
from .errors import ConfigurationError, EventNotSubscribed, FlowDefinitionError, FlowNotFound
from .flows import Flow
from .run import Run, check_submit

if TYPE_CHECKING:
    from .app import App
    from .store.outbox import Caller

__all__ = [
    "bind_flows",
    "check_keys",
    "check_max_priority",
    "default_app",
    "emit",
    "events",
    "resolve",
    "start_in",
    "submit",
    "submit_many",
    "wants_embedded",
]


def bind_flows(app: App, flows: Iterable[Flow]) -> dict[str, Flow]:
    """An App's flows by name, each bound to it (and compiled).

    Raises:
        FlowDefinitionError: something that is not a flow, two flows of one name, or
            a flow bound to another App.
    """
    named: dict[str, Flow] = {}
    for flow in flows:
        if not isinstance(flow, Flow):
            raise FlowDefinitionError(f"App {app.name!r}: {flow!r} is not a Pipeline or Workflow")
        if flow.name in named:
            raise FlowDefinitionError(f"App {app.name!r}: two flows are named {flow.name!r}")
        named[flow.name] = flow
    for flow in _with_children(list(named.values())):  # a called flow runs in its caller's App
        if named.setdefault(flow.name, flow) is not flow:
            raise FlowDefinitionError(f"App {app.name!r}: two flows are named {flow.name!r}")
    for flow in named.values():
        flow._bind(app)
    return named


def _with_children(flows: list[Flow]) -> list[Flow]:
    """The flows that ``flows`` call as steps (``Workflow.call``), and theirs, in turn."""
    found: list[Flow] = []
    todo = list(flows)
    while todo:
        for stage in todo.pop().steps.values():
            if stage.child is not None and all(stage.child is not f for f in found):
                found.append(stage.child)
                todo.append(stage.child)
    return found


def check_max_priority(max_priority: int | None, queue_type: str | None = None) -> int | None:
    """``App(max_priority=)``, once it is ``None`` or an integer in 1..255, and not asked
    for together with ``queue_type="quorum"`` (``$FLOWKIT_QUEUE_TYPE`` is checked when the
    broker is built: :func:`~flowkit.config.check_queue_type`).

    Raises:
        ConfigurationError: anything else.
    """
    if max_priority is not None and not (isinstance(max_priority, int) and 0 < max_priority <= 255):
        raise ConfigurationError("max_priority must be an integer in 1..255")
    check_queue_type(queue_type, max_priority)
    return max_priority


def default_app(flow: Flow) -> App:
    """The App of a flow submitted without one: named after it, on the default URLs."""
    from .app import App  # app.py imports this module

    return App(flow.name, flows=[flow])


def resolve(app: App, flow: Flow | str) -> Flow:
    """The flow of ``app`` that ``flow`` names (or is).

    Raises:
        FlowNotFound: it is not one of the App's flows.
    """
    if isinstance(flow, Flow):
        if app._flows.get(flow.name) is not flow:
            raise FlowNotFound(f"flow {flow.name!r} is not part of App {app.name!r}")
        return flow
    return app.flow(flow)


def submit(
    app: App,
    flow: Flow | str,
    input: Any,
    *,
    key: str | None,
    priority: int | None,
    connection: Caller | None = None,
) -> Run:
    """:meth:`App.submit <flowkit.App.submit>`."""
    f = resolve(app, flow)
    check_submit(key, priority, app.max_priority)
    engine = app.engine
    if connection is not None:
        payload = engine.validate_input(engine.flow(f.name), input)
        ((run_id, created),) = start_in(app, f, [payload], [key], priority, connection)
        return Run(app, run_id, f.name, created=created)
    app._maybe_start_embedded()
    run_id, created = engine.submit(engine.flow(f.name), input, key=key, priority=priority)
    return Run(app, run_id, f.name, created=created)


def submit_many(
    app: App,
    flow: Flow | str,
    inputs: Iterable[Any],
    *,
    keys: Iterable[str] | None,
    priority: int | None,
    connection: Caller | None = None,
) -> list[Run]:
    """:meth:`App.submit_many <flowkit.App.submit_many>`."""
    f = resolve(app, flow)
    values = list(inputs)
    batch_keys = check_keys(keys, len(values))
    check_submit(None, priority, app.max_priority)
    engine = app.engine
    if connection is not None:
        from .runtime.batches import check_inputs  # the runtime loads on first use

        payloads = check_inputs(engine.flow(f.name), values, engine.limits)
        started = start_in(app, f, payloads, batch_keys, priority, connection)
    else:
        app._maybe_start_embedded()
        graph = engine.flow(f.name)
        started = engine.submit_many(graph, values, keys=batch_keys, priority=priority)
    return [Run(app, run_id, f.name, created=created) for run_id, created in started]


def start_in(
    app: App,
    flow: Flow,
    payloads: list[Any],
    keys: list[str | None],
    priority: int | None,
    connection: Caller,
) -> list[tuple[str, bool]]:
    """Store validated runs in the caller's transaction (:mod:`flowkit.runtime.outbox`),
    the embedded worker started first if it is wanted, as for an ordinary submit."""
    from .runtime.outbox import start_in as store_in  # the runtime loads on first use

    engine = app.engine
    starter = app._maybe_start_embedded if wants_embedded(app) else None
    graph = engine.flow(flow.name)
    return store_in(
        engine,
        graph,
        payloads,
        keys=keys,
        priority=priority,
        connection=connection,
        start_worker=starter,
    )


def wants_embedded(app: App) -> bool:
    """Whether the App's embedded worker should start now: asked for (or the default,
    with ``memory://``) and not running."""
    embedded = app._embedded_worker
    if embedded is None:
        embedded = app.settings.embedded
    return bool(embedded) and not app._local.running


def check_keys(keys: Iterable[str] | None, count: int) -> list[str | None]:
    """One key per input (all ``None`` without keys), each valid and none twice.

    Raises:
        ConfigurationError: not one key per input, an invalid key (named by its
            index), or a key given twice (named, with both indexes).
    """
    if keys is None:
        return [None] * count
    if isinstance(keys, str):
        raise ConfigurationError("keys must be a list of keys, one per input, not a string")
    listed: list[str | None] = list(keys)
    if len(listed) != count:
        raise ConfigurationError(
            f"keys has {len(listed)} key(s) for {count} input(s): "
            "give one key per input, or keys=None"
        )
    seen: dict[str, int] = {}
    for i, key in enumerate(listed):
        try:
            if key is None:
                raise ConfigurationError("key must be a string, not None")
            check_submit(key, None, None)
        except ConfigurationError as exc:
            raise ConfigurationError(f"keys[{i}]: {exc}") from None
        if key in seen:
            raise ConfigurationError(
                f"key {key!r} is given twice in one batch (keys[{seen[key]}] and keys[{i}]); "
                "each run of a batch needs a key of its own"
            )
        seen[key] = i
    return listed


def events(flows: Iterable[Flow]) -> dict[str, list[str]]:
    """Each event name and the flows it starts (:meth:`App.events <flowkit.App.events>`)."""
    out: dict[str, list[str]] = {}
    for f in flows:
        for e in f.events:
            out.setdefault(e, []).append(f.name)
    return out


def emit(
    app: App, event: str, payload: Any, *, key: str | None, connection: Caller | None = None
) -> list[Run]:
    """:meth:`App.emit <flowkit.App.emit>`."""
    flows = [f for f in app.flows if event in f.events]
    if not flows:
        known = sorted({e for f in app.flows for e in f.events})
        raise EventNotSubscribed(
            f"no flow of App {app.name!r} subscribes to event {event!r} "
            f"(events: {', '.join(known) or 'none'})"
        )
    engine = app.engine
    graphs = [engine.flow(f.name) for f in flows]
    payloads = [(g, engine.validate_input(g, payload)) for g in graphs]
    if connection is not None:
        return [
            Run(app, run_id, f.name, created=created)
            for f, data in zip(flows, (d for _, d in payloads), strict=True)
            for run_id, created in start_in(app, f, [data], [key], None, connection)
        ]
    app._maybe_start_embedded()
    runs = []
    for f, data in payloads:
        run_id, created = engine.start(f, data, key=key)
        runs.append(Run(app, run_id, f.name, created=created))
    return runs
