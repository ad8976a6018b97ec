"""A Sphinx directive that renders every ``flowkit`` command's ``--help`` from the real parser.

The reference page cannot drift from the CLI: it is the parser's own text, generated at
build time. ``tests/unit/test_cli_reference.py`` checks that every command is in it.
"""

from __future__ import annotations

from typing import Any

from cli_commands import commands, help_text
from docutils import nodes
from docutils.parsers.rst import Directive

from flowkit.cli.main import build_parser

__all__ = ["CliReference", "commands", "help_text", "setup"]


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
