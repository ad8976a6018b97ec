"""Shell completion: the real ``flowkit`` command answers argcomplete's protocol."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from conftest import flowkit_cmd

pytest.importorskip("argcomplete")


def _complete(line: str, tmp_path: Path) -> list[str]:
    """What the shell would offer for ``line`` (the cursor at its end)."""
    out = tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",  # words start at the first one: `flowkit ...`
        "_ARGCOMPLETE_IFS": "\n",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
    }
    done = subprocess.run(flowkit_cmd(), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [c.strip() for c in out.read_text().split("\n") if c.strip()]


def test_subcommands_complete(tmp_path: Path) -> None:
    offered = _complete("flowkit ", tmp_path)
    for name in ("worker", "dev", "submit", "runs", "retry", "health", "dead"):
        assert name in offered
    assert _complete("flowkit sub", tmp_path) == ["submit"]
    assert set(_complete("flowkit runs ", tmp_path)) >= {"list", "show"}


def test_options_complete(tmp_path: Path) -> None:
    assert set(_complete("flowkit submit --js", tmp_path)) == {"--json", "--jsonl"}
    assert "--reload" in _complete("flowkit dev --re", tmp_path)


def test_the_entry_module_carries_the_global_completion_marker() -> None:
    [script] = [e for e in entry_points(group="console_scripts") if e.name == "flowkit"]
    found = importlib.util.find_spec(script.module)
    assert found is not None and found.origin is not None
    # activate-global-python-argcomplete completes scripts whose module says so early on.
    assert "PYTHON_ARGCOMPLETE_OK" in Path(found.origin).read_text()[:1024]
