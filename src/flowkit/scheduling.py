"""Cron schedules: periodiq's cron parser, ticks deduplicated in the database.

``flowkit scheduler`` computes each scheduled flow's next tick with periodiq's
cron rules (in UTC) and starts a run for it with the key
``schedule:<tick>``. The runs table's unique (flow, key) is the tick row: two
schedulers running at once start each tick once, whichever submits first.

Catch-up policy: a scheduler that was down does not flood on restart. By
default the ticks it missed are skipped and logged; ``catch_up="latest"``
starts the most recent missed tick once.

RabbitMQ down: the scheduler keeps running. It logs one WARNING naming the
broker and the cause, tries again with backoff (:mod:`flowkit.runtime.backoff`:
``$FLOWKIT_BROKER_RETRY_SECONDS``, 1 s, doubling to 30 s) without a word, and
logs one INFO line when RabbitMQ is back. It starts no run meanwhile (nothing is
stored that could not be sent); a tick that came due is started then, late, and
when several came due, the latest is started and the others are logged as skipped.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .config import mask_url
from .cron import next_tick, parse_cron
from .errors import BrokerError, ConfigurationError, FlowkitError
from .runtime.backoff import BrokerOutage

if TYPE_CHECKING:
    from .app import App
    from .flows import Flow

# parse_cron and next_tick live in flowkit.cron (flows check their schedule with it);
# they are still importable from here.
__all__ = ["Scheduler", "next_tick", "parse_cron", "tick_key"]

log = logging.getLogger("flowkit.scheduler")

#: how often the scheduler also runs the recovery sweep and deadline checks
SWEEP_EVERY = 30.0
_KEY_PREFIX = "schedule:"


def tick_key(tick: datetime) -> str:
    """The run key of a scheduled tick: the dedupe row in the runs table."""
    return f"{_KEY_PREFIX}{tick.astimezone(timezone.utc):%Y-%m-%dT%H:%MZ}"


def _tick_of(key: str) -> datetime | None:
    try:
        return datetime.strptime(key[len(_KEY_PREFIX) :], "%Y-%m-%dT%H:%MZ").replace(
            tzinfo=timezone.utc
        )
    except ValueError:
        return None


class Scheduler:
    """Starts scheduled runs on time, once per tick, and sweeps for stuck work.

    Parameters:
        app: the App whose flows carry ``schedule=``.
        catch_up: ``"skip"`` (default: log missed ticks) or ``"latest"``
            (start the most recent missed tick once).
        sweep_every: seconds between recovery sweeps (0 disables them).
    """

    def __init__(self, app: App, *, catch_up: str = "skip", sweep_every: float = SWEEP_EVERY):
        if catch_up not in ("skip", "latest"):
            raise ConfigurationError("catch_up must be 'skip' or 'latest'")
        self.app = app
        self.catch_up = catch_up
        self.sweep_every = sweep_every
        self.flows = [f for f in app.flows if f.schedule]
        self.specs = {f.name: parse_cron(f.schedule or "", what=f.name) for f in self.flows}
        self.started: list[tuple[str, datetime, str, bool]] = []
        #: whether RabbitMQ answers, and when to try again if not
        self.outage = BrokerOutage(log, f"RabbitMQ at {mask_url(app.settings.broker_url)}")

    def _input(self, flow: Flow, tick: datetime) -> Any:
        return flow.schedule_input if flow.schedule_input is not None else tick

    def fire(self, flow: Flow, tick: datetime) -> bool:
        """Start ``flow``'s run for ``tick`` unless a scheduler already did; True if we did."""
        run = self.app.submit(flow, self._input(flow, tick), key=tick_key(tick))
        self.started.append((flow.name, tick, run.id, run.created))
        if run.created:
            log.info("started run %s of %s for tick %s", run.id, flow.name, tick.isoformat())
        else:
            log.info(
                "tick %s of %s was already started (run %s)", tick.isoformat(), flow.name, run.id
            )
        return run.created

    def _catch_up(self, now: datetime) -> None:
        for flow in self.flows:
            last = self._last_tick(flow)
            if last is None:
                continue
            missed: list[datetime] = []
            tick = next_tick(self.specs[flow.name], last)
            while tick <= now and len(missed) < 10_000:
                missed.append(tick)
                tick = next_tick(self.specs[flow.name], tick)
            if not missed:
                continue
            if self.catch_up == "latest":
                log.warning(
                    "%s missed %d tick(s) while no scheduler ran; starting the latest (%s)",
                    flow.name,
                    len(missed),
                    missed[-1].isoformat(),
                )
                self.fire(flow, missed[-1])
            else:
                log.warning(
                    "%s missed %d tick(s) while no scheduler ran (%s .. %s); skipped "
                    "(catch-up policy: skip)",
                    flow.name,
                    len(missed),
                    missed[0].isoformat(),
                    missed[-1].isoformat(),
                )

    def _last_tick(self, flow: Flow) -> datetime | None:
        for info in self.app.store.list_runs(flow=flow.name, limit=50):
            if info.key and info.key.startswith(_KEY_PREFIX):
                return _tick_of(info.key)
        return None

    def run(self, stop: threading.Event, *, now: Any = None) -> None:
        """Loop until ``stop`` is set: fire due ticks, sweep every ``sweep_every`` seconds;
        while RabbitMQ is down, only try again now and then (see the module's docstring)."""
        clock = now or (lambda: datetime.now(timezone.utc))
        upcoming: dict[str, datetime] | None = None  # set once the catch-up is done
        next_sweep = datetime.min.replace(tzinfo=timezone.utc)
        while not stop.is_set():
            if not self._broker_ready(stop):
                continue
            try:
                if upcoming is None:
                    self._catch_up(clock())
                    upcoming = {f.name: next_tick(self.specs[f.name], clock()) for f in self.flows}
                    next_sweep = clock()
                current = clock()
                self._fire_due(upcoming, current)
                if self.sweep_every and current >= next_sweep:
                    self._sweep()
                    next_sweep = current + timedelta(seconds=self.sweep_every)
            except BrokerError as exc:  # RabbitMQ went away since the check
                self.outage.failed(exc)
                continue
            wake = min([*upcoming.values(), next_sweep]) if self.sweep_every else None
            if wake is None and not upcoming:
                stop.wait(1.0)
                continue
            target = wake if wake is not None else min(upcoming.values())
            stop.wait(min(1.0, max(0.05, (target - clock()).total_seconds())))

    def _broker_ready(self, stop: threading.Event) -> bool:
        """Whether RabbitMQ takes messages; while it does not, waits (at most 1 s, so a
        signal is seen) until the next try is due, then tries."""
        left = self.outage.remaining()
        if left > 0:
            stop.wait(min(1.0, left))
            return False
        try:
            self.app.engine.publisher.ready()  # cheap while its connection is open
        except BrokerError as exc:
            self.outage.failed(exc)
            return False
        self.outage.recovered()
        return True

    def _fire_due(self, upcoming: dict[str, datetime], current: datetime) -> None:
        for flow in self.flows:
            spec, due = self.specs[flow.name], [upcoming[flow.name]]
            if due[0] > current:
                continue
            while (later := next_tick(spec, due[-1])) <= current and len(due) < 10_000:
                due.append(later)
            if len(due) > 1:
                log.warning(
                    "%s missed %d tick(s) while runs could not be started (%s .. %s); "
                    "starting the latest",
                    flow.name,
                    len(due),
                    due[0].isoformat(),
                    due[-1].isoformat(),
                )
            self.fire(flow, due[-1])
            upcoming[flow.name] = next_tick(spec, due[-1])

    def _sweep(self) -> None:
        try:
            self.app.recover(older_than=60.0)
        except BrokerError:
            raise
        except FlowkitError as exc:  # keep scheduling through a database hiccup
            log.warning("recovery sweep failed: %s; retrying in %gs", exc, self.sweep_every)
        except Exception:
            log.warning("recovery sweep failed; retrying later", exc_info=True)
