"""The retention setting: how long finished runs are kept before the workers delete them.

``FLOWKIT_RETENTION=30d`` (or ``retention = "30d"`` in ``[tool.flowkit]``) makes the
in-worker sweep (:mod:`flowkit.runtime.sweep`) delete finished runs that ended longer
ago than that, with their steps, signals and attempts, a small batch per pass (see
:mod:`flowkit.store.prune`). ``FLOWKIT_RETENTION_STATUSES=succeeded,cancelled`` keeps
the others. Unset (or ``off``): every run is kept. ``flowkit db prune`` does the same
once, on demand, and parses its ``--status`` with :func:`parse_statuses`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ._types import parse_duration_ms
from .errors import ConfigurationError
from .project import find_project
from .status import RunStatus

__all__ = [
    "MIN_RETENTION",
    "SWEEP_BATCH",
    "SWEEP_BATCHES",
    "TERMINAL",
    "Retention",
    "parse_statuses",
    "retention_setting",
]

#: The shortest retention the setting accepts: a caller waiting on a run reads its
#: result after it ends, so a run is never deleted the moment it ends.
MIN_RETENTION = timedelta(minutes=1)
#: Runs the sweep deletes per transaction: a short one, that never starves the steps.
SWEEP_BATCH = 500
#: Batches the sweep deletes per pass at the most, while each is full: with a pass every
#: 5 s, up to 1,000 runs a second, enough to keep up with busy workers.
SWEEP_BATCHES = 10
#: The statuses a run may be deleted in: the terminal ones.
TERMINAL: tuple[RunStatus, ...] = tuple(s for s in RunStatus if s.terminal)
_OFF = {"off", "none", "never"}


@dataclass(frozen=True)
class Retention:
    """Finished runs older than :attr:`keep` (in one of :attr:`statuses`) may go.

    Parameters:
        keep: how long after its end a run is kept.
        statuses: the terminal statuses whose runs are deleted (default: all four).
        batch: runs deleted per transaction.
        batches: batches per sweep pass at the most (the next only when the last was full).
    """

    keep: timedelta
    statuses: tuple[RunStatus, ...] = TERMINAL
    batch: int = SWEEP_BATCH
    batches: int = SWEEP_BATCHES

    def cutoff(self, now: datetime) -> datetime:
        """Runs that ended before this are deleted."""
        return now - self.keep

    def __str__(self) -> str:
        statuses = "" if self.statuses == TERMINAL else f" ({', '.join(self.statuses)} runs)"
        return f"{_shown(self.keep)}{statuses}"


def parse_statuses(values: Iterable[str], *, what: str) -> tuple[RunStatus, ...]:
    """Terminal run statuses from their names (``succeeded``, ``failed``, ...), in order.

    Raises:
        ConfigurationError: an unknown status, or one that is not terminal.
    """
    names = [v.strip().lower() for v in values if v.strip()]
    if not names:
        raise ConfigurationError(f"{what}: name at least one status")
    known = ", ".join(s.value for s in TERMINAL)
    found: list[RunStatus] = []
    for name in names:
        try:
            status = RunStatus(name)
        except ValueError:
            raise ConfigurationError(
                f"{what}: unknown run status {name!r} (statuses: {known})"
            ) from None
        if not status.terminal:
            raise ConfigurationError(
                f"{what}: a {name} run is not finished and is never pruned (statuses: {known})"
            )
        found.append(status)
    return tuple(s for s in TERMINAL if s in found)


def retention_setting() -> Retention | None:
    """The retention of ``$FLOWKIT_RETENTION``, else ``retention`` of ``[tool.flowkit]``;
    ``None`` (keep every run) when neither is set or it is ``off``. Read once, when a
    worker starts.

    Raises:
        ConfigurationError: not a duration, shorter than :data:`MIN_RETENTION`, or
            ``$FLOWKIT_RETENTION_STATUSES`` names a status that is not terminal.
    """
    raw = os.environ.get("FLOWKIT_RETENTION", "").strip()
    what = "FLOWKIT_RETENTION"
    if not raw:
        project = find_project()
        raw = (project.retention or "").strip() if project is not None else ""
        what = f"{project.path}: [tool.flowkit] retention" if project is not None else what
    if not raw or raw.lower() in _OFF:
        return None
    ms = parse_duration_ms(raw, what=what)
    keep = timedelta(milliseconds=ms or 0)
    if keep < MIN_RETENTION:
        raise ConfigurationError(
            f"{what}={raw!r} is too short: keep finished runs at least 1m (or set it to off)"
        )
    statuses = os.environ.get("FLOWKIT_RETENTION_STATUSES", "").strip()
    if not statuses:
        return Retention(keep)
    return Retention(keep, parse_statuses(statuses.split(","), what="FLOWKIT_RETENTION_STATUSES"))


def _shown(keep: timedelta) -> str:
    seconds = int(keep.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
