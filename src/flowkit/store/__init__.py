"""Persistence: the only package that imports SQLAlchemy."""

from .repo import Store
from .rows import NO_STOP, Claim, DueStep, Gate, NewStep, RunEnd, Source

__all__ = ["NO_STOP", "Claim", "DueStep", "Gate", "NewStep", "RunEnd", "Source", "Store"]
