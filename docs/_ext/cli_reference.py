"""A Sphinx directive that renders every ``flowkit`` command's ``--help`` from the real parser.

The reference page cannot drift from the CLI: it is the parser's own text, generated at
build time. ``tests/unit/test_cli_reference.py`` checks that every command is in it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive

from flowkit.cli.main import build_parser

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


class CliReference(Directive):
    """``.. flowkit-cli-reference::``: one section per command with its help."""

    has_content = False

    def run(self) -> list[Any]:
        out: list[Any] = []
        for path, parser in commands(build_parser()):
            title = "flowkit " + " ".join(path)
            section = nodes.section(ids=[nodes.make_id(title)])
            section += nodes.title(text=title)
            section += nodes.literal_block(text=help_text(parser))
            out.append(section)
        return out


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("flowkit-cli-reference", CliReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
