"""The generated command reference covers every command, sub-commands included."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _extension() -> object:
    spec = importlib.util.spec_from_file_location("cli_commands", DOCS / "_ext" / "cli_commands.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _listed(*args: str) -> list[str]:
    """The sub-commands ``flowkit ... --help`` lists under COMMAND (none: a leaf command)."""
    out = subprocess.run(
        [sys.executable, "-m", "flowkit", *args, "--help"], capture_output=True, text=True
    ).stdout
    if "\n  COMMAND\n" not in out:
        return []
    listing = out.split("\n  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^    ([a-z][a-z-]*)", listing, flags=re.MULTILINE)


def test_every_command_is_in_the_generated_reference() -> None:
    ext = _extension()
    from flowkit.cli.main import build_parser

    generated = {" ".join(path) for path, _ in ext.commands(build_parser())}  # type: ignore[attr-defined]
    expected = set()
    for name in _listed():
        subs = _listed(name)
        expected |= {f"{name} {s}" for s in subs} if subs else {name}
    assert expected and generated == expected
    page = (DOCS / "cli-reference.md").read_text()
    assert ".. flowkit-cli-reference::" in page
    assert "cli-reference" in (DOCS / "index.md").read_text()
