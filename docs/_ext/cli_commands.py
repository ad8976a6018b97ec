"""Every ``flowkit`` command and its ``--help`` text, from the real parser (no Sphinx needed).

``cli_reference.py`` renders these into the docs; ``tests/unit/test_cli_reference.py`` checks
that every command is listed, without needing the docs' tools installed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

#: The width the help text is wrapped at, whatever the terminal building the docs.
WIDTH = "96"


def commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and sub-command, as ``(("runs", "list"), parser)``, in declaration order."""
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = (*prefix, name)
                nested = list(commands(sub, path))
                if nested:
                    yield from nested
                else:
                    yield path, sub


def help_text(parser: argparse.ArgumentParser) -> str:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return parser.format_help()
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
