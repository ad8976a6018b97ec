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
    "POOLERS",
    "QUEUE_TYPES",
    "Settings",
    "broker_urls",
    "check_queue_type",
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
#: The connection poolers flowkit can work behind (``FLOWKIT_DATABASE_POOLER``); see
#: docs/operations.md, "Many workers: PgBouncer".
POOLERS = ("transaction",)
#: The RabbitMQ queue types flowkit declares (``FLOWKIT_QUEUE_TYPE``); see docs/operations.md,
#: "Running on a RabbitMQ cluster".
QUEUE_TYPES = ("classic", "quorum")

_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)(?P<pw>[^@/]*)(?P<tail>@.*)$")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#]*)", re.IGNORECASE)


def broker_urls(url: str | Sequence[str]) -> list[str]:
    """The URLs of a broker setting: one URL, a list, or several joined by ``;`` (the nodes
    of a RabbitMQ cluster, as Dramatiq's broker takes them)."""
    parts = url.split(";") if isinstance(url, str) else [p for u in url for p in u.split(";")]
    return [p.strip() for p in parts if p.strip()]


def mask_url(url: str) -> str:
    """Hide the password of a URL: ``amqp://guest:***@host/``. Safe on any string.

    A ``password=`` query parameter (``postgresql://u@h/db?password=...``) is hidden too,
    and each URL of a list joined by ``;`` (``amqp://u:***@a/;amqp://u:***@b/``).
    """
    if ";" in url and url.count("://") > 1:
        return ";".join(mask_url(u) for u in url.split(";"))
    url = _QUERY_PASSWORD.sub(lambda m: m.group("head") + ("***" if m.group("pw") else ""), url)
    m = _PASSWORD.match(url)
    if not m or not m.group("pw"):
        return url
    return f"{m.group('head')}***{m.group('tail')}"


def url_passwords(url: str) -> list[str]:
    """The passwords a URL (or each URL of a ``;`` list) carries (user info and
    ``password=``), raw and decoded."""
    found = [m.group("pw") for m in _QUERY_PASSWORD.finditer(url) if m.group("pw")]
    for one in url.split(";") if url.count("://") > 1 else [url]:
        m = _PASSWORD.match(one.strip())
        if m and m.group("pw"):
            found.append(m.group("pw"))
    return sorted({v for pw in found for v in (pw, unquote(pw))})


@dataclass(frozen=True, repr=False)
class Settings:
    """Resolved connection and message-security settings.

    Its ``repr`` masks URL passwords and never shows the signing keys.

    Parameters:
        broker_url: ``memory://`` (in-process) or ``amqp://user:pass@host:5672/vhost``;
            the nodes of a RabbitMQ cluster joined by ``;`` (:func:`broker_urls`).
        database_url: ``sqlite:///path.db`` or ``postgresql://user@host/db``.
        signing_keys: the keys accepted on message signatures; the first signs.
            Empty: messages are not signed, and signatures are not checked.
        max_payload_bytes: the largest payload (compact JSON, UTF-8) and message body.
        max_payload_depth: the deepest nesting of lists and objects in a payload or message.
        database_pooler: ``"transaction"`` when ``database_url`` is a pooler in
            transaction mode (PgBouncer): no session state is kept between transactions.
            ``None``: a direct connection.
        listen_url: where ``Run.wait``'s ``LISTEN`` connects (directly to PostgreSQL),
            if not ``database_url``; behind a pooler, without it, waits poll.
        queue_type: the type of the RabbitMQ queues flowkit declares: ``"classic"`` or
            ``"quorum"`` (replicated over a cluster's nodes).
    """

    broker_url: str
    database_url: str
    signing_keys: tuple[str, ...] = field(default=(), repr=False)
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_payload_depth: int = DEFAULT_MAX_PAYLOAD_DEPTH
    database_pooler: str | None = None
    listen_url: str | None = None
    queue_type: str = "classic"

    @classmethod
    def resolve(
        cls,
        broker_url: str | Sequence[str] | None = None,
        database_url: str | None = None,
        *,
        signing_key: str | Sequence[str] | None = None,
        max_payload_bytes: int | None = None,
        max_payload_depth: int | None = None,
        queue_type: str | None = None,
    ) -> Settings:
        """Arguments first, then the environment, then the project, then defaults.

        The environment: ``FLOWKIT_BROKER_URL``, ``FLOWKIT_DATABASE_URL``,
        ``FLOWKIT_SIGNING_KEY`` (comma-separated keys, the first signs),
        ``FLOWKIT_MAX_PAYLOAD_BYTES``, ``FLOWKIT_MAX_PAYLOAD_DEPTH``,
        ``FLOWKIT_DATABASE_POOLER`` (``none`` or ``transaction``),
        ``FLOWKIT_LISTEN_URL`` and ``FLOWKIT_QUEUE_TYPE``. The project: ``broker_url``,
        ``database_url`` and ``database_pooler`` of ``[tool.flowkit]`` in the
        nearest pyproject.toml that has that table (:func:`~flowkit.project.find_project`).
        Inside such a project a relative SQLite path there, and the default
        ``sqlite:///flowkit.db``, are files in the project's folder; outside one,
        the default file is in the current directory.

        Raises:
            ConfigurationError: an unsupported URL, a key shorter than 16
                characters, a limit that is not a positive integer, an unknown
                pooler, or a ``[tool.flowkit]`` table with an unknown key.

        .. versionchanged:: 0.3
           The project configuration, between the environment and the defaults.
        """
        given = ";".join(broker_urls(broker_url)) if broker_url else None
        broker = given or os.environ.get("FLOWKIT_BROKER_URL")
        database = database_url or os.environ.get("FLOWKIT_DATABASE_URL")
        if not broker or not database:
            broker, database = _from_project(broker, database, find_project())
        broker = _check_broker(broker)
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
            database_pooler=_pooler(),
            listen_url=_listen_url(),
            queue_type=_queue_type(queue_type),
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
            *url_passwords(self.listen_url or ""),
        ]

    def __repr__(self) -> str:
        keys = f"<{len(self.signing_keys)} hidden>" if self.signing_keys else "()"
        return (
            f"Settings(broker_url={mask_url(self.broker_url)!r}, "
            f"database_url={mask_url(self.database_url)!r}, signing_keys={keys}, "
            f"max_payload_bytes={self.max_payload_bytes}, "
            f"max_payload_depth={self.max_payload_depth}, "
            f"database_pooler={self.database_pooler!r}, "
            f"listen_url={mask_url(self.listen_url) if self.listen_url else None!r})"
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


def _check_broker(broker: str) -> str:
    """A broker setting checked: ``memory://``, or one or more ``amqp(s)://`` URLs (joined
    by ``;``, blanks dropped)."""
    urls = broker_urls(broker) or [broker]
    for url in urls:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in {"memory", "amqp", "amqps"}:
            raise ConfigurationError(
                f"broker URL {mask_url(url)!r} is not supported: use memory:// or amqp://..."
            )
        if scheme == "memory" and len(urls) > 1:
            raise ConfigurationError(
                f"broker URL {mask_url(broker)!r}: memory:// is in-process and cannot be one "
                "of several URLs; list only amqp:// URLs (the nodes of a RabbitMQ cluster)"
            )
    return ";".join(urls)


def _queue_type(given: str | None) -> str:
    """``queue_type`` given, else ``$FLOWKIT_QUEUE_TYPE``, else ``"classic"``; checked."""
    where = "queue_type" if given is not None else "FLOWKIT_QUEUE_TYPE"
    raw = given if given is not None else os.environ.get("FLOWKIT_QUEUE_TYPE", "")
    value = raw.strip().lower() if isinstance(raw, str) else raw
    if value == "":
        return "classic"
    if value not in QUEUE_TYPES:
        raise ConfigurationError(
            f"{where}={raw!r} is not supported: use classic or quorum (RabbitMQ quorum "
            "queues, replicated over a cluster)"
        )
    return str(value)


def check_queue_type(queue_type: str | None, max_priority: int | None) -> None:
    """Refuse quorum queues with message priorities: RabbitMQ refuses ``x-max-priority``
    on a quorum queue (406), so the App would fail at its first declare.

    Raises:
        ConfigurationError: ``queue_type`` is ``"quorum"`` and ``max_priority`` is set.
    """
    if queue_type == "quorum" and max_priority is not None:
        raise ConfigurationError(
            f"max_priority={max_priority} cannot be used with quorum queues: RabbitMQ's "
            "quorum queues have no message priorities; drop max_priority (and submit's "
            "priority=), or keep classic queues (docs/operations.md, Running on a RabbitMQ "
            "cluster)"
        )


def _pooler() -> str | None:
    """``$FLOWKIT_DATABASE_POOLER``, else the project's ``database_pooler``: ``None``
    (unset or ``none``: a direct connection) or one of :data:`POOLERS`."""
    raw = os.environ.get("FLOWKIT_DATABASE_POOLER", "").strip()
    where = "FLOWKIT_DATABASE_POOLER"
    if not raw:
        project = find_project()
        raw = (project.database_pooler or "") if project is not None else ""
        where = f"{project.path}: [tool.flowkit] database_pooler" if project else where
    value = raw.strip().lower()
    if value in ("", "none"):
        return None
    if value not in POOLERS:
        raise ConfigurationError(
            f"{where}={raw!r} is not supported: use none (a direct connection) or "
            "transaction (PgBouncer in transaction mode)"
        )
    return value


def _listen_url() -> str | None:
    """``$FLOWKIT_LISTEN_URL``: a direct PostgreSQL URL for ``LISTEN``, if set."""
    url = os.environ.get("FLOWKIT_LISTEN_URL", "").strip()
    if not url:
        return None
    if not url.lower().startswith(("postgres://", "postgresql://", "postgresql+psycopg://")):
        raise ConfigurationError(
            f"FLOWKIT_LISTEN_URL={mask_url(url)!r} is not a PostgreSQL URL: use "
            "postgresql://user@host:5432/db (directly to PostgreSQL, not the pooler)"
        )
    return url


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
