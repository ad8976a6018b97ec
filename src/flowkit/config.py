"""Settings: where the broker and the database are, read from arguments or the environment."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import ConfigurationError

__all__ = ["DEFAULT_BROKER_URL", "DEFAULT_DATABASE_URL", "Settings", "mask_url"]

DEFAULT_BROKER_URL = "memory://"
DEFAULT_DATABASE_URL = "sqlite:///flowkit.db"

_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)(?P<pw>[^@/]*)(?P<tail>@.*)$")


def mask_url(url: str) -> str:
    """Hide the password of a URL: ``amqp://guest:***@host/``. Safe on any string."""
    m = _PASSWORD.match(url)
    if not m or not m.group("pw"):
        return url
    return f"{m.group('head')}***{m.group('tail')}"


@dataclass(frozen=True)
class Settings:
    """Resolved connection settings.

    Parameters:
        broker_url: ``memory://`` (in-process) or ``amqp://user:pass@host:5672/vhost``.
        database_url: ``sqlite:///path.db`` or ``postgresql://user@host/db``.
    """

    broker_url: str
    database_url: str

    @classmethod
    def resolve(cls, broker_url: str | None = None, database_url: str | None = None) -> Settings:
        """Arguments first, then ``FLOWKIT_BROKER_URL``/``FLOWKIT_DATABASE_URL``, then defaults."""
        broker = broker_url or os.environ.get("FLOWKIT_BROKER_URL") or DEFAULT_BROKER_URL
        database = database_url or os.environ.get("FLOWKIT_DATABASE_URL") or DEFAULT_DATABASE_URL
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
        return cls(broker_url=broker, database_url=database)

    @property
    def embedded(self) -> bool:
        """Whether the broker lives inside this process (``memory://``)."""
        return self.broker_url.startswith("memory://")
