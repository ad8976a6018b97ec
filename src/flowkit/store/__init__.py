"""Persistence: the only package that imports SQLAlchemy (layers in ``docs/architecture.md``)."""

from .calls import Calls, ChildRun, ChildSpec, Woken
from .control import Control
from .db import Database
from .deadletters import DeadLetter, DeadLetters
from .inuse import LimitsInUse
from .llmcache import LLMCache
from .prune import Prune, Pruned
from .queries import Queries, RunFilter, RunPage
from .reads import Reads
from .rows import (
    NO_STOP,
    ChainClaim,
    Claim,
    ClaimLimits,
    Delayed,
    DueStep,
    Gate,
    Handoff,
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
from .strands import LiveRun, OpenStep, StrandedRun, Strands
from .submits import NewRun, Submits, Submitted
from .workers import Workers

__all__ = [
    "NO_STOP",
    "Calls",
    "ChainClaim",
    "ChildRun",
    "ChildSpec",
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
    "Handoff",
    "LLMCache",
    "LimitsInUse",
    "LiveRun",
    "NewRun",
    "NewStep",
    "OpenStep",
    "Outcome",
    "Prune",
    "Pruned",
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
    "StrandedRun",
    "Strands",
    "Submits",
    "Submitted",
    "Woken",
    "Workers",
]
