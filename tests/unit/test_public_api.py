"""The public surface: complete, importable, and free of import-time side effects."""

from __future__ import annotations

import subprocess
import sys
import types

import flowkit


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
