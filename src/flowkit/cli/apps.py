"""Which App a command works on: one rule for every command.

The flow definitions come from the first of: the command's ``MODULE:ATTR``
positional (where it has one), ``--app MODULE:ATTR``, ``$FLOWKIT_APP``, and
``app`` in ``[tool.flowkit]`` of the nearest pyproject.toml (a relative path
there resolves against that file's folder, which module names import from).
Commands that only read the database work without any.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TypeVar

from ..app import App
from ..errors import ConfigurationError
from ..project import find_project
from .loader import Target, load

__all__ = [
    "MISSING",
    "add_app_arguments",
    "app_spec",
    "cli_app",
    "load_optional",
    "load_target",
    "project_setting",
]

MISSING = (
    "this needs the flow definitions: pass MODULE:ATTR, set FLOWKIT_APP, "
    "or set app in [tool.flowkit] of pyproject.toml"
)
T = TypeVar("T")

DEFAULT = "default: $FLOWKIT_APP, else app in [tool.flowkit] of pyproject.toml"


def add_app_arguments(
    parser: argparse.ArgumentParser, what: str, *, positional: bool = True
) -> None:
    """``[MODULE:ATTR]`` (when ``positional``) and ``--app/-a MODULE:ATTR``.

    Parameters:
        parser: the command's parser.
        what: what the App is for, the start of the help text.
        positional: also take it as the optional first positional (the commands
            that took ``MODULE:ATTR`` that way keep it).
    """
    if positional:
        parser.add_argument("target", nargs="?", metavar="MODULE:ATTR", help=f"{what} ({DEFAULT})")
        flag_help = "the same as the positional MODULE:ATTR"
    else:
        flag_help = f"{what} ({DEFAULT})"
    parser.add_argument("--app", "-a", metavar="MODULE:ATTR", help=flag_help)


def app_spec(args: argparse.Namespace) -> tuple[str, Path | None] | None:
    """The ``MODULE:ATTR`` the command was given, and the folder it imports from
    (``None``: the current directory), or ``None`` if none was given.

    Raises:
        ConfigurationError: both the positional and ``--app``, naming different apps;
            or a bad ``[tool.flowkit]`` table.
    """
    positional = getattr(args, "target", None)
    flag = getattr(args, "app", None)
    if positional and flag and positional != flag:
        raise ConfigurationError(
            f"two apps given, {positional} and --app {flag}: pass MODULE:ATTR once"
        )
    spec = positional or flag or os.environ.get("FLOWKIT_APP")
    if spec:
        return spec, None
    project = find_project()
    if project is not None and project.app_spec is not None:
        return project.app_spec, project.root
    return None


def load_target(args: argparse.Namespace) -> Target:
    """What the command's app rule names, loaded.

    Raises:
        ConfigurationError: no app given anywhere (:data:`MISSING`).
        LoadError: it cannot be loaded.
    """
    found = app_spec(args)
    if found is None:
        raise ConfigurationError(MISSING)
    return load(found[0], root=found[1])


def load_optional(args: argparse.Namespace) -> Target | None:
    """As :func:`load_target`, or ``None`` when no app is given anywhere."""
    found = app_spec(args)
    return None if found is None else load(found[0], root=found[1])


def cli_app(
    args: argparse.Namespace,
    name: str,
    *,
    need_flows: bool,
    create_schema: bool = False,
    embedded_worker: bool = False,
) -> App:
    """The App of a command, configured with its connection flags.

    Without an app given (and ``need_flows=False``), an App without flows called
    ``name``: enough for the commands that only read or change stored runs. By
    default it creates no schema (only ``db upgrade``, workers and ``dev`` do).
    """
    target = load_target(args) if need_flows else load_optional(args)
    app = target.app if target is not None else App(name)
    app.configure(
        broker_url=args.broker_url,
        database_url=args.database_url,
        embedded_worker=embedded_worker,
        create_schema=create_schema,
    )
    return app


def project_setting(key: str, given: T | None, default: T) -> T:
    """A flag's value: as given, else ``key`` of ``[tool.flowkit]``, else ``default``.

    Raises:
        ConfigurationError: a bad ``[tool.flowkit]`` table.
    """
    if given is not None:
        return given
    project = find_project()
    value: T | None = getattr(project, key) if project is not None else None
    return default if value is None else value
