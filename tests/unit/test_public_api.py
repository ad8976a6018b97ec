"""The public surface: complete, importable, and free of import-time side effects."""

from __future__ import annotations

import re
import subprocess
import sys
import types

import flowkit
from flowkit import errors


def test_all_names_exist() -> None:
    for name in flowkit.__all__:
        assert hasattr(flowkit, name), name


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(flowkit).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(flowkit.__all__) - {"__version__"}


def test_no_duplicates_in_all() -> None:
    assert len(flowkit.__all__) == len(set(flowkit.__all__))


def test_errors_share_one_root() -> None:
    for name in flowkit.__all__:
        value = getattr(flowkit, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, flowkit.FlowkitError), name


def test_every_error_is_in_the_one_tree() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == errors.__name__
    }
    assert defined == set(errors.__all__)
    assert set(errors.__all__) <= set(flowkit.__all__)
    doc = errors.__doc__ or ""
    drawn = set(re.findall(r"^[ │├└─]*(\w+)", doc, re.M))
    missing = sorted(set(errors.__all__) - drawn)
    assert not missing, f"not drawn in the tree of flowkit.errors' docstring: {missing}"


def test_errors_keep_their_old_import_paths() -> None:
    from flowkit import llm
    from flowkit.cli import loader

    for name in ("LLMError", "LLMOutputError", "LLMRequestError", "LLMUnavailable"):
        assert getattr(llm, name) is getattr(errors, name), name
    assert loader.LoadError is errors.LoadError
    assert issubclass(errors.LLMOutputError, flowkit.PermanentError)
    assert issubclass(errors.LLMRequestError, flowkit.PermanentError)
    assert not issubclass(errors.LLMUnavailable, flowkit.PermanentError)


def test_import_has_no_side_effects(tmp_path) -> None:
    code = (
        "import flowkit, sys, os\n"
        "import dramatiq\n"
        "assert dramatiq.broker.global_broker is None, 'a global broker was created'\n"
        "assert not os.path.exists('flowkit.db'), 'a database was created'\n"
        "assert 'sqlalchemy' not in sys.modules, 'SQLAlchemy imported eagerly'\n"
        "assert 'pika' not in sys.modules, 'pika imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)


def test_declaring_a_flow_connects_nothing(tmp_path) -> None:
    code = (
        "import flowkit, os, sys\n"
        "@flowkit.stage\n"
        "def a(x: int) -> int: return x\n"
        "p = flowkit.Pipeline('p', [a])\n"
        "app = flowkit.App('x', flows=[p])\n"
        "assert not os.path.exists('flowkit.db')\n"
        "assert 'sqlalchemy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)


def test_every_public_name_is_in_the_api_reference() -> None:
    """docs/api.md autodocs each name of ``flowkit.__all__`` (errors through flowkit.errors)."""
    import re
    from pathlib import Path

    import flowkit.errors

    api = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    documented = set(re.findall(r"\.\. auto(?:class|function)::\s+flowkit\.(\w+)", api))
    documented |= set(re.findall(r"\.\. data::\s+flowkit\.(\w+)", api))
    assert ".. automodule:: flowkit.errors" in api
    documented |= set(flowkit.errors.__all__)
    missing = [name for name in flowkit.__all__ if name not in documented]
    assert not missing, f"not in docs/api.md: {', '.join(missing)}"


def test_flowkit_testing_is_a_pytest_plugin_by_its_own_name() -> None:
    """Installed projects get the fixtures without a pytest_plugins line (this suite keeps
    one, which must not clash: pytest skips a plugin already registered under that name)."""
    from importlib.metadata import entry_points

    (plugin,) = [e for e in entry_points(group="pytest11") if e.value == "flowkit.testing"]
    assert plugin.name == "flowkit.testing"
