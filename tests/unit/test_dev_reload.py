"""``flowkit dev --reload``: restarts on a code change, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import flowkit_cmd

pytest.importorskip("watchfiles")

APP = """\
import flowkit


@flowkit.stage(queue="reload")
def echo(x: int) -> int:
    return x


app = flowkit.App("reload", flows=[flowkit.Pipeline("{name}", [echo])])
"""


class Lines:
    """The command's stderr, line by line, awaited with a timeout (no sleeps)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stderr is not None
        stream = proc.stderr
        threading.Thread(target=lambda: [self.queue.put(ln) for ln in stream], daemon=True).start()

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not seen in:\n{''.join(self.seen)}")


def test_reload_restarts_on_a_change_and_stops_cleanly(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP.format(name="first"))
    env = {"FLOWKIT_BROKER_URL": "memory://", "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path}/r.db"}
    argv = flowkit_cmd("dev", "app.py:app", "--reload", "--threads", "1")
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = Lines(proc)
        lines.wait_for(f"watching {tmp_path.resolve()} (*.py)")
        first = lines.wait_for("flowkit dev pid=")
        assert "flows=first" in first
        app.write_text(APP.format(name="second"))
        lines.wait_for("app.py changed; restarting flowkit dev")
        second = lines.wait_for("flowkit dev pid=")
        assert "flows=second" in second  # the new code is served
        assert second.split("pid=")[1].split()[0] != first.split("pid=")[1].split()[0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        lines.wait_for("stopped")  # the child stopped too, before the parent exited
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_reload_names_a_missing_app_file(tmp_path: Path) -> None:
    done = subprocess.run(
        flowkit_cmd("dev", "nowhere.py:app", "--reload"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert done.stderr.strip().splitlines()[-1] == (
        f"flowkit: error: cannot watch nowhere.py:app: no file {tmp_path / 'nowhere.py'}"
    )


def test_reload_without_watchfiles_says_how_to_install_it(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP.format(name="first"))
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "watchfiles.py").write_text("raise ImportError('watchfiles is not installed')\n")
    done = subprocess.run(
        flowkit_cmd("dev", "app.py:app", "--reload"),
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(shadow)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "flowkit: error: flowkit dev --reload needs watchfiles: pip install 'flowkit[reload]'"
        )
    )
