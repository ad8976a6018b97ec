"""``flowkit dev --reload``: restart the dev process when the app's code changes.

As ``dramatiq --watch`` does: this process runs the same ``flowkit dev`` command
without ``--reload`` as a child, watches the ``*.py`` files under the app's folder
(with watchfiles, the ``reload`` extra), and on a change stops the child (SIGTERM:
running steps get ``--shutdown-timeout`` to finish) and starts a new one, logging
one line. SIGINT and SIGTERM are passed on to the child, which stops, then so does
this process. A child that exits on its own (a syntax error in the app) is started
again at the next change.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, LoadError
from . import exits
from .apps import MISSING, app_spec

__all__ = ["CHILD_ENV", "run_reloading", "watched_folder"]

log = logging.getLogger("flowkit.worker")

#: Set in the child's environment: the child serves, it does not watch again.
CHILD_ENV = "FLOWKIT_RELOAD_CHILD"
_MISSING_EXTRA = (
    "flowkit dev --reload needs watchfiles: pip install 'flowkit[reload]' "
    "(or, from flowkit's source, pip install '.[reload]')"
)


def watched_folder(spec: str, root: Path | None = None) -> Path:
    """The folder whose ``*.py`` files ``MODULE:ATTR`` loads: a file's folder, or the
    folder of the top-level package (or module) of a dotted name. Imports nothing.

    Parameters:
        spec: ``path/to/app.py:ATTR`` or ``package.module:ATTR``.
        root: the folder a relative path or a module name is found from (default: the
            current directory).

    Raises:
        LoadError: the file or module cannot be found.
    """
    name = spec.rpartition(":")[0] or spec
    base = root if root is not None else Path.cwd()
    if name.endswith(".py") or "/" in name or os.sep in name:
        path = base / name
        if not path.is_file():
            raise LoadError(f"cannot watch {spec}: no file {path}")
        return path.resolve().parent
    top = name.split(".")[0]
    found = importlib.machinery.PathFinder.find_spec(top, [str(base), *sys.path])
    if found is None or (found.origin is None and not found.submodule_search_locations):
        raise LoadError(f"cannot watch {spec}: no module {top!r} on the path")
    if found.submodule_search_locations:
        return Path(next(iter(found.submodule_search_locations))).resolve()
    return Path(str(found.origin)).resolve().parent


def run_reloading(args: argparse.Namespace, argv: list[str]) -> int:
    """Run ``flowkit dev`` (``argv`` without ``--reload``) as a child, restarting it
    when a ``*.py`` file under the app's folder changes, until SIGINT or SIGTERM.

    Raises:
        ConfigurationError: watchfiles is not installed, or no app is given.
        LoadError: the app's file or module cannot be found.
    """
    try:
        from watchfiles import PythonFilter, watch  # the reload extra, optional
    except ImportError:
        raise ConfigurationError(_MISSING_EXTRA) from None
    found = app_spec(args)
    if found is None:
        raise ConfigurationError(MISSING)
    folder = watched_folder(*found)
    child_argv = [sys.executable, "-m", "flowkit", *(a for a in argv if a != "--reload")]
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # one line per restart, ours
    log.info("flowkit dev --reload pid=%d watching %s (*.py)", os.getpid(), folder)
    grace = args.shutdown_timeout + 10
    child: subprocess.Popen[bytes] | None = _start(child_argv)
    code = exits.OK
    # A timeout every second, to notice a child that exited on its own.
    for changes in watch(
        folder,
        watch_filter=PythonFilter(),
        stop_event=stop,
        rust_timeout=1000,
        yield_on_timeout=True,
        raise_interrupt=False,
    ):
        if child is not None and child.poll() is not None:
            if child.returncode == exits.USAGE:
                code = exits.USAGE  # the command line is wrong: no code change fixes it
                break
            log.warning(
                "flowkit dev exited with %s; it starts again at the next change", child.returncode
            )
            child = None
        if not changes:
            continue
        changed = min(Path(path) for _, path in changes)
        log.info("%s changed; restarting flowkit dev", _shown(changed, folder))
        _stop(child, signal.SIGTERM, grace)
        child = _start(child_argv)
    _stop(child, received[0] if received else signal.SIGTERM, grace)
    return code


def _start(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env={**os.environ, CHILD_ENV: "1"})


def _stop(child: subprocess.Popen[bytes] | None, signum: int, grace: float) -> None:
    """Pass ``signum`` on to the child and wait for it; kill it after ``grace`` seconds."""
    if child is None or child.poll() is not None:
        return
    child.send_signal(signum)
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        log.warning("flowkit dev pid=%d did not stop in %gs; killing it", child.pid, grace)
        child.kill()
        child.wait()


def _shown(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)
