"""Persistence: the only package that imports SQLAlchemy."""

from .repo import Claim, DueStep, NewStep, Store

__all__ = ["Claim", "DueStep", "NewStep", "Store"]
