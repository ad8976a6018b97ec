"""flowkit: durable, typed workflows on Dramatiq with SQL state.

Declare stages with :func:`stage`, chain them in a :class:`Pipeline` or a
:class:`Workflow`, bind flows to a broker and a database with an
:class:`App`, then ``submit``. Nothing connects at import.
"""

from .__about__ import __version__
from .app import App, Run
from .context import Context
from .errors import (
    BrokerError,
    ConfigurationError,
    EventNotSubscribed,
    FlowDefinitionError,
    FlowkitError,
    FlowNotFound,
    InputValidationError,
    InvalidQuery,
    LLMError,
    LLMOutputError,
    LLMRequestError,
    LLMUnavailable,
    LoadError,
    NotFoundError,
    PayloadTooLarge,
    PermanentError,
    ResultTimeout,
    RetryAfter,
    RunError,
    RunFailed,
    RunNotFound,
    RunStateError,
    SchemaVersionError,
    SignalRejected,
    StepTimeout,
    StoreError,
    WorkerLost,
)
from .flows import Flow, Pipeline
from .joins import ItemFailure, Settled
from .observability import Observer
from .progress import Progress
from .queues import Queue, RateLimit
from .records import AttemptInfo, RetryPreview, RunInfo, RunningStep, StepInfo, WorkerInfo
from .stage import Stage, Stop, stage
from .status import RunStatus, StepStatus
from .waits import TimedOut
from .workflows import Workflow

__all__ = [
    # Declaring flows
    "stage",
    "Stage",
    "Stop",
    "TimedOut",
    "Context",
    "Flow",
    "Pipeline",
    "Workflow",
    "Settled",
    "ItemFailure",
    "Queue",
    "RateLimit",
    # Running them
    "App",
    "Run",
    "RunInfo",
    "StepInfo",
    "AttemptInfo",
    "RetryPreview",
    "WorkerInfo",
    "RunningStep",
    "RunStatus",
    "StepStatus",
    "Observer",
    "Progress",
    # Errors
    "FlowkitError",
    "BrokerError",
    "ConfigurationError",
    "EventNotSubscribed",
    "FlowDefinitionError",
    "FlowNotFound",
    "InputValidationError",
    "InvalidQuery",
    "NotFoundError",
    "PayloadTooLarge",
    "PermanentError",
    "ResultTimeout",
    "RetryAfter",
    "RunError",
    "RunFailed",
    "RunNotFound",
    "RunStateError",
    "SchemaVersionError",
    "SignalRejected",
    "StepTimeout",
    "WorkerLost",
    "StoreError",
    "LoadError",
    "LLMError",
    "LLMOutputError",
    "LLMRequestError",
    "LLMUnavailable",
    # Metadata
    "__version__",
]
