"""Named exit codes of the ``flowkit`` command (documented in ``flowkit --help``)."""

from __future__ import annotations

from ..errors import (
    BrokerError,
    ConfigurationError,
    FlowDefinitionError,
    FlowkitError,
    InputValidationError,
    LoadError,
    NotFoundError,
    RunError,
    RunStateError,
    SchemaVersionError,
    StoreError,
)

OK = 0
UNEXPECTED = 1
USAGE = 2
LOAD = 3
INVALID_INPUT = 4
NOT_FOUND = 5
UNAVAILABLE = 6
SCHEMA = 7
RUN_FAILED = 8
RUN_STATE = 9
INTERRUPTED = 130

TABLE = """\
exit codes:
  0    success
  1    unexpected error (set FLOWKIT_DEBUG=1 for the traceback)
  2    usage error or bad configuration
  3    MODULE:ATTR could not be loaded, or its flows are invalid
  4    invalid input data (nothing was enqueued)
  5    run, flow or stage not found
  6    broker or database unavailable
  7    database schema missing or newer than this flowkit
  8    the run failed, was cancelled or timed out (commands that wait)
  9    the run's state forbids it (a signal to a finished run, retrying a live run)
  130  interrupted"""


def for_error(exc: FlowkitError) -> int:
    """The exit code for a flowkit error."""
    if isinstance(exc, LoadError):
        return LOAD
    if isinstance(exc, InputValidationError):
        return INVALID_INPUT
    if isinstance(exc, NotFoundError):
        return NOT_FOUND
    if isinstance(exc, SchemaVersionError):
        return SCHEMA
    if isinstance(exc, (StoreError, BrokerError)):
        return UNAVAILABLE
    if isinstance(exc, RunStateError):
        return RUN_STATE
    if isinstance(exc, RunError):
        return RUN_FAILED
    if isinstance(exc, FlowDefinitionError):
        return LOAD
    if isinstance(exc, ConfigurationError):
        return USAGE
    return UNEXPECTED
