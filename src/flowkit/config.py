"""Settings: where the broker and the database are, read from arguments, the environment
or the project configuration (``[tool.flowkit]`` of pyproject.toml, :mod:`flowkit.project`).

Also the message-security settings: the keys that sign messages and the
limits on payload size and nesting depth.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from .errors import ConfigurationError
from .project import Project, anchor_sqlite, find_project

__all__ = [
    "DEFAULT_BROKER_URL",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_MAX_PAYLOAD_DEPTH",
    "Settings",
    "mask_url",
    "url_passwords",
]

DEFAULT_BROKER_URL = "memory://"
DEFAULT_DATABASE_URL = "sqlite:///flowkit.db"
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_MAX_PAYLOAD_DEPTH = 32
#: pydantic cannot serialize values nested deeper than about 250 levels.
MAX_PAYLOAD_DEPTH_LIMIT = 200
MIN_SIGNING_KEY_LENGTH = 16

_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)(?P<pw>[^@/]*)(?P<tail>@.*)$")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#]*)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """Hide the password of a URL: ``amqp://guest:***@host/``. Safe on any string.

    A ``password=`` query parameter (``postgresql://u@h/db?password=...``) is hidden too.
    """
    url = _QUERY_PASSWORD.sub(lambda m: m.group("head") + ("***" if m.group("pw") else ""), url)
    m = _PASSWORD.match(url)
    if not m or not m.group("pw"):
        return url
    return f"{m.group('head')}***{m.group('tail')}"


def url_passwords(url: str) -> list[str]:
    """The passwords a URL carries (user info and ``password=``), raw and decoded."""
    found = [m.group("pw") for m in _QUERY_PASSWORD.finditer(url) if m.group("pw")]
    m = _PASSWORD.match(url)
    if m and m.group("pw"):
        found.append(m.group("pw"))
    return sorted({v for pw in found for v in (pw, unquote(pw))})


@dataclass(frozen=True, repr=False)
class Settings:
    """Resolved connection and message-security settings.

    Its ``repr`` masks URL passwords and never shows the signing keys.

    Parameters:
        broker_url: ``memory://`` (in-process) or ``amqp://user:pass@host:5672/vhost``.
        database_url: ``sqlite:///path.db`` or ``postgresql://user@host/db``.
        signing_keys: the keys accepted on message signatures; the first signs.
            Empty: messages are not signed, and signatures are not checked.
        max_payload_bytes: the largest payload (compact JSON, UTF-8) and message body.
        max_payload_depth: the deepest nesting of lists and objects in a payload or message.
    """

    broker_url: str
    database_url: str
    signing_keys: tuple[str, ...] = field(default=(), repr=False)
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_payload_depth: int = DEFAULT_MAX_PAYLOAD_DEPTH

    @classmethod
    def resolve(
        cls,
        broker_url: str | None = None,
        database_url: str | None = None,
        *,
        signing_key: str | Sequence[str] | None = None,
        max_payload_bytes: int | None = None,
        max_payload_depth: int | None = None,
    ) -> Settings:
        """Arguments first, then the environment, then the project, then defaults.

        The environment: ``FLOWKIT_BROKER_URL``, ``FLOWKIT_DATABASE_URL``,
        ``FLOWKIT_SIGNING_KEY`` (comma-separated keys, the first signs),
        ``FLOWKIT_MAX_PAYLOAD_BYTES`` and ``FLOWKIT_MAX_PAYLOAD_DEPTH``. The
        project: ``broker_url`` and ``database_url`` of ``[tool.flowkit]`` in the
        nearest pyproject.toml that has that table (:func:`~flowkit.project.find_project`).
        Inside such a project a relative SQLite path there, and the default
        ``sqlite:///flowkit.db``, are files in the project's folder; outside one,
        the default file is in the current directory.

        Raises:
            ConfigurationError: an unsupported URL, a key shorter than 16
                characters, a limit that is not a positive integer, or a
                ``[tool.flowkit]`` table with an unknown key.

        .. versionchanged:: 0.3
           The project configuration, between the environment and the defaults.
        """
        broker = broker_url or os.environ.get("FLOWKIT_BROKER_URL")
        database = database_url or os.environ.get("FLOWKIT_DATABASE_URL")
        if not broker or not database:
            broker, database = _from_project(broker, database, find_project())
        scheme = broker.split("://", 1)[0].lower() if "://" in broker else ""
        if scheme not in {"memory", "amqp", "amqps"}:
            raise ConfigurationError(
                f"broker URL {mask_url(broker)!r} is not supported: use memory:// or amqp://..."
            )
        if "://" not in database:
            raise ConfigurationError(
                f"database URL {mask_url(database)!r} is not a URL: use sqlite:///file.db "
                "or postgresql://user@host/db"
            )
        return cls(
            broker_url=broker,
            database_url=database,
            signing_keys=_signing_keys(signing_key),
            max_payload_bytes=_limit(
                max_payload_bytes, "FLOWKIT_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES
            ),
            max_payload_depth=_limit(
                max_payload_depth,
                "FLOWKIT_MAX_PAYLOAD_DEPTH",
                DEFAULT_MAX_PAYLOAD_DEPTH,
                most=MAX_PAYLOAD_DEPTH_LIMIT,
            ),
        )

    @property
    def embedded(self) -> bool:
        """Whether the broker lives inside this process (``memory://``)."""
        return self.broker_url.startswith("memory://")

    def secrets(self) -> list[str]:
        """The values never to print: the signing keys and the URLs' passwords."""
        return [
            *self.signing_keys,
            *url_passwords(self.broker_url),
            *url_passwords(self.database_url),
        ]

    def __repr__(self) -> str:
        keys = f"<{len(self.signing_keys)} hidden>" if self.signing_keys else "()"
        return (
            f"Settings(broker_url={mask_url(self.broker_url)!r}, "
            f"database_url={mask_url(self.database_url)!r}, signing_keys={keys}, "
            f"max_payload_bytes={self.max_payload_bytes}, "
            f"max_payload_depth={self.max_payload_depth})"
        )


def _from_project(
    broker: str | None, database: str | None, project: Project | None
) -> tuple[str, str]:
    """The URLs not given by arguments or the environment: the project's, else the defaults
    (the default SQLite file in the project's folder when there is a project)."""
    if project is None:
        return broker or DEFAULT_BROKER_URL, database or DEFAULT_DATABASE_URL
    broker = broker or project.broker_url or DEFAULT_BROKER_URL
    database = database or project.database_url or anchor_sqlite(DEFAULT_DATABASE_URL, project.root)
    return broker, database


def _signing_keys(given: str | Sequence[str] | None) -> tuple[str, ...]:
    raw: str | Sequence[str] = (
        given if given is not None else os.environ.get("FLOWKIT_SIGNING_KEY", "")
    )
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    if not all(isinstance(k, str) for k in items):
        raise ConfigurationError("signing keys must be strings")
    keys = tuple(k.strip() for k in items if k.strip())
    for i, key in enumerate(keys):
        if len(key) < MIN_SIGNING_KEY_LENGTH:
            # The key itself is never part of an error message.
            raise ConfigurationError(
                f"signing key #{i + 1} is {len(key)} characters long: use at least "
                f"{MIN_SIGNING_KEY_LENGTH} (e.g. python -c 'import secrets; "
                "print(secrets.token_hex(32))')"
            )
    return keys


def _limit(given: int | None, env: str, default: int, *, most: int | None = None) -> int:
    value: object = given
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ConfigurationError(f"{env}={text!r} is not an integer") from None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{env} must be a positive integer, got {value!r}")
    if most is not None and value > most:
        raise ConfigurationError(f"{env} must be at most {most}, got {value}")
    return value
