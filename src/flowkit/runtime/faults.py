"""Fault hooks for the reliability tests: kill the process at a named point.

Off unless ``FLOWKIT_FAULT`` names a point when the process starts, e.g.
``FLOWKIT_FAULT=after-commit`` makes a worker die (``os._exit``) right after
recording a step's completion and before publishing what follows. An optional
``@N`` fires at the N-th time the point is reached (``after-commit@25``).

Points:
    ``before-commit``  the step ran; its result is not recorded yet.
    ``after-commit``   the result and successors are committed; nothing published.
    ``after-publish``  successors handed to the publisher; the message is not acknowledged yet.
    ``submit-after-commit``  a submitted run is stored; its first message not sent.
    ``before-confirm``  the publisher thread wrote a batch; RabbitMQ has not settled it
                        (its transaction is not committed, so the batch is lost).
"""

from __future__ import annotations

import os
import threading

__all__ = ["POINTS", "fault"]

POINTS = (
    "before-commit",
    "after-commit",
    "after-publish",
    "submit-after-commit",
    "before-confirm",
)

_SPEC = os.environ.get("FLOWKIT_FAULT", "")
_POINT, _, _NTH = _SPEC.partition("@")
_EXIT_CODE = 137
_count = 0
_lock = threading.Lock()


def fault(point: str) -> None:
    """Die here if ``FLOWKIT_FAULT`` names this point (a no-op otherwise)."""
    global _count
    if point != _POINT:
        return
    with _lock:
        _count += 1
        if _count >= int(_NTH or 1):
            os._exit(_EXIT_CODE)
