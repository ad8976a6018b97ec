"""The built wheel installs in a fresh virtualenv and its console script works."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_wheel_installs_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("flowkit-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True
    )
    help_out = subprocess.run(
        [str(env_dir / "bin" / "flowkit"), "--help"], capture_output=True, text=True, check=True
    )
    assert "exit codes" in help_out.stdout
    # The migrations and py.typed ship inside the wheel.
    check = (
        "import flowkit, pathlib; root = pathlib.Path(flowkit.__file__).parent; "
        "assert (root / 'py.typed').exists(); "
        "assert list((root / 'store' / 'migrations' / 'versions').glob('0001_*.py'))"
    )
    subprocess.run([str(python), "-c", check], check=True, cwd=tmp_path)
