"""Persistence: the only package that imports SQLAlchemy."""

from .control import Control, StepRow
from .repo import Store
from .rows import NO_STOP, Claim, ClaimLimits, Delayed, DueStep, Gate, NewStep, RunEnd, Source

__all__ = [
    "NO_STOP",
    "Control",
    "StepRow",
    "Claim",
    "ClaimLimits",
    "Delayed",
    "DueStep",
    "Gate",
    "NewStep",
    "RunEnd",
    "Source",
    "Store",
]
