"""The project configuration: ``[tool.flowkit]`` of the nearest ``pyproject.toml`` that has it.

Found by walking up from the current directory, so every command run anywhere
inside a project (and every ``App`` created there) reads the same settings::

    [tool.flowkit]
    app = "app.py:pipeline"           # MODULE:ATTR or path/to/file.py:ATTR
    broker_url = "amqp://guest:guest@127.0.0.1:5672/"
    database_url = "sqlite:///flowkit.db"
    database_pooler = "none"          # or "transaction": behind PgBouncer
    threads = 4                       # flowkit worker / flowkit dev
    processes = 2                     # flowkit worker
    retention = "30d"                 # finished runs the workers delete (flowkit.retention)

Relative paths (the app's file, a SQLite file) resolve against the folder of
that ``pyproject.toml``, not the current directory. Flags and the environment
override it (see :meth:`flowkit.config.Settings.resolve`).

.. versionadded:: 0.3
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib

__all__ = ["KEYS", "Project", "anchor_sqlite", "find_project", "read_project"]

#: The keys ``[tool.flowkit]`` accepts, and what each must be.
KEYS: dict[str, type] = {
    "app": str,
    "broker_url": str,
    "database_url": str,
    "database_pooler": str,
    "threads": int,
    "processes": int,
    "retention": str,
}
_KINDS = {str: "a string", int: "an integer"}


@dataclass(frozen=True)
class Project:
    """The ``[tool.flowkit]`` table of one ``pyproject.toml``.

    Attributes:
        path: the ``pyproject.toml`` it was read from (absolute).
        app: the flows' ``MODULE:ATTR`` as written, if set.
        broker_url: the broker URL, if set.
        database_url: the database URL, a relative SQLite path already resolved
            against :attr:`root`, if set.
        database_pooler: ``"transaction"`` behind PgBouncer in transaction mode, if set.
        threads: worker threads of ``flowkit worker`` and ``flowkit dev``, if set.
        processes: worker processes of ``flowkit worker``, if set.
        retention: how long the workers keep finished runs (``"30d"``), if set
            (parsed by :func:`flowkit.retention.retention_setting`).
    """

    path: Path
    app: str | None = None
    broker_url: str | None = None
    database_url: str | None = None
    database_pooler: str | None = None
    threads: int | None = None
    processes: int | None = None
    retention: str | None = None

    @property
    def root(self) -> Path:
        """The project's folder: relative paths resolve against it."""
        return self.path.parent

    @property
    def app_spec(self) -> str | None:
        """:attr:`app` with a relative file path made absolute against :attr:`root`."""
        if self.app is None:
            return None
        module, sep, attr = self.app.rpartition(":")
        looks_like_path = module.endswith(".py") or "/" in module or os.sep in module
        if sep and looks_like_path and not Path(module).is_absolute():
            return f"{self.root / module}:{attr}"
        return self.app


def find_project(start: Path | None = None) -> Project | None:
    """The nearest ``pyproject.toml`` with a ``[tool.flowkit]`` table, from ``start``
    (default: the current directory) up to the filesystem root.

    Raises:
        ConfigurationError: that file is not valid TOML, or its table has an unknown
            key or a value of the wrong type (the message names the key and the file).
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            project = read_project(candidate)
            if project is not None:
                return project
    return None


def read_project(path: Path) -> Project | None:
    """The ``[tool.flowkit]`` table of ``path``, or ``None`` when it has none.

    Raises:
        ConfigurationError: as :func:`find_project`.
    """
    path = path.resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    if "flowkit" not in text:  # most pyproject.toml files: no need to parse them
        return None
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None
    table = doc.get("tool", {}).get("flowkit")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigurationError(f"{path}: [tool.flowkit] must be a table")
    values = {key: _checked(path, key, value) for key, value in table.items()}
    if "database_url" in values:
        values["database_url"] = anchor_sqlite(values["database_url"], path.parent)
    return Project(path=path, **values)


def _checked(path: Path, key: str, value: object) -> Any:
    kind = KEYS.get(key)
    if kind is None:
        known = ", ".join(KEYS)
        raise ConfigurationError(
            f"{path}: [tool.flowkit] has no setting {key!r} (settings: {known})"
        )
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigurationError(
            f"{path}: [tool.flowkit] {key} must be {_KINDS[kind]}, got {value!r}"
        )
    if isinstance(value, int) and value < 1:
        raise ConfigurationError(f"{path}: [tool.flowkit] {key} must be at least 1, got {value}")
    if isinstance(value, str) and not value.strip():
        raise ConfigurationError(f"{path}: [tool.flowkit] {key} must not be empty")
    return value


def anchor_sqlite(url: str, root: Path) -> str:
    """A SQLite URL whose relative file path is resolved against ``root``.

    ``sqlite:///flowkit.db`` → ``sqlite:////project/flowkit.db``; absolute paths,
    in-memory databases and other URLs are returned as they are.
    """
    scheme, sep, rest = url.partition(":///")
    if not sep or not scheme.lower().startswith("sqlite"):
        return url
    file, q, query = rest.partition("?")
    if not file or file == ":memory:" or file.startswith("file:") or Path(file).is_absolute():
        return url
    return f"{scheme}:///{root / file}{q}{query}"
