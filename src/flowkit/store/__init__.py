"""Persistence: the only package that imports SQLAlchemy (layers in ``docs/architecture.md``)."""

from .control import Control
from .db import Database
from .deadletters import DeadLetter, DeadLetters
from .inuse import LimitsInUse
from .llmcache import LLMCache
from .queries import Queries, RunFilter, RunPage
from .reads import Reads
from .rows import (
    NO_STOP,
    Claim,
    ClaimLimits,
    Delayed,
    DueStep,
    Gate,
    NewStep,
    Outcome,
    ReceivedSignal,
    RunEnd,
    SignalWait,
    Source,
    StepRow,
)
from .runs import Created, Recorded, Runs
from .store import Store
from .workers import Workers

__all__ = [
    "NO_STOP",
    "Claim",
    "ClaimLimits",
    "Control",
    "Created",
    "Database",
    "DeadLetter",
    "DeadLetters",
    "Delayed",
    "DueStep",
    "Gate",
    "LLMCache",
    "LimitsInUse",
    "NewStep",
    "Outcome",
    "Queries",
    "Reads",
    "ReceivedSignal",
    "Recorded",
    "RunEnd",
    "RunFilter",
    "RunPage",
    "Runs",
    "SignalWait",
    "Source",
    "StepRow",
    "Store",
    "Workers",
]
