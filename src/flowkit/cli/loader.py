"""Resolve ``MODULE:ATTR`` (or ``path/to/file.py:ATTR``) to an App and its flows."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..app import App
from ..errors import FlowkitError, LoadError
from ..flows import Flow

# LoadError lives in flowkit.errors with the others; it is re-exported here.
__all__ = ["LoadError", "Target", "load"]


@dataclass(frozen=True)
class Target:
    """What ``MODULE:ATTR`` named: an App, and the flow if it named one."""

    spec: str
    app: App
    flow: Flow | None

    @property
    def flows(self) -> list[Flow]:
        return [self.flow] if self.flow is not None else self.app.flows


def load(spec: str, *, root: Path | None = None) -> Target:
    """Import ``spec`` and return what it names.

    Parameters:
        spec: ``MODULE:ATTR`` or ``path/to/file.py:ATTR``.
        root: the folder a module name imports from (default: the current
            directory), e.g. the project's folder for ``app`` in ``[tool.flowkit]``.

    Raises:
        LoadError: a malformed spec, an import failure (with its cause) or an
            attribute that is neither an App nor a Pipeline/Workflow.
    """
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise LoadError(
            f"{spec!r} is not MODULE:ATTR (e.g. myapp.flows:pipeline or "
            "examples/exceptions/app.py:pipeline)"
        )
    module = _import(module_part, spec, root)
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(f"module {module_part!r} has no attribute {attr!r}") from None
    if isinstance(obj, App):
        return Target(spec, obj, None)
    if isinstance(obj, Flow):
        return Target(spec, obj.app, obj)
    raise LoadError(f"{spec} is a {type(obj).__name__}, not a flowkit App, Pipeline or Workflow")


def _import(name: str, spec: str, root: Path | None) -> object:
    try:
        if name.endswith(".py") or os.sep in name or "/" in name:
            return _import_path(Path(name))
        if root is not None:
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
        elif os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        return importlib.import_module(name)
    except LoadError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise LoadError(f"no module named {name!r} (from {spec!r})") from None
        raise LoadError(f"importing {name!r} failed: {_describe(exc)}") from exc
    except FlowkitError as exc:
        raise LoadError(f"importing {name!r} failed: {exc}") from exc
    except Exception as exc:
        raise LoadError(f"importing {name!r} failed: {_describe(exc)}") from exc


def _import_path(path: Path) -> object:
    if not path.is_file():
        raise LoadError(f"no such file: {path}")
    path = path.resolve()
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    # Named by the whole path: two apps both called app.py are two modules.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    mod_name = f"_flowkit_target_{path.stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[mod_name]
        raise
    return module


def _describe(exc: BaseException) -> str:
    where = ""
    if isinstance(exc, SyntaxError):
        where = f" ({exc.filename}:{exc.lineno})"
    else:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            where = f" ({tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
    return f"{type(exc).__name__}: {exc}{where}"
