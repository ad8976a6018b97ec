"""The dashboard's state: the App it shows, its security settings, and safe access to the store.

The dashboard never creates or upgrades the schema: before the App's store is
first opened (which would create it), the schema is checked with a throwaway
connection, and a missing or foreign schema becomes an error page instead.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..app import App
from ..errors import FlowNotFound
from ..flows import Flow
from ..graph import FlowGraph

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["Dashboard"]


@dataclass
class Dashboard:
    """What every route reads: the App and how the dashboard is protected.

    Attributes:
        app: the App whose database (and flows, when it has any) are shown.
        read_only: no actions at all (buttons not rendered, POSTs answer 403).
        token: the token that mutating requests (and, if required, reads) need;
            ``None`` means no authentication (``--no-auth``).
        require_token_for_reads: reads need the token too (a non-local bind).
    """

    app: App
    read_only: bool = False
    token: str | None = None
    require_token_for_reads: bool = False
    #: signs the login cookie (a fresh secret per process: restarting logs everyone out)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _schema_ok: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def has_flows(self) -> bool:
        """Whether the App carries flow definitions (else flows, queues and actions are off)."""
        return bool(self.app.flows)

    @property
    def actions(self) -> bool:
        """Whether actions are offered at all."""
        return not self.read_only

    @property
    def store(self) -> Store:
        """The App's store, once the schema is known to be there and current.

        Raises:
            SchemaVersionError: the schema is missing, older or newer (nothing created).
            StoreError: the database is unavailable.
        """
        with self._lock:
            if not self._schema_ok:
                from ..store import Store  # SQLAlchemy loads with the first store

                s = self.app.settings
                probe = Store(s.database_url, pool_size=1, pooler=s.database_pooler)
                try:
                    probe.check_schema()
                finally:
                    probe.dispose()
                self._schema_ok = True
        return self.app.store

    def flow(self, name: str) -> Flow | None:
        """The App's flow of that name, if it has one."""
        try:
            return self.app.flow(name)
        except FlowNotFound:
            return None

    def graph(self, name: str) -> FlowGraph | None:
        flow = self.flow(name)
        return None if flow is None else flow.compile()

    def mode(self) -> str:
        """How actions are protected, in words (the CLI's start-up line)."""
        if self.read_only:
            return "read-only"
        return "no auth" if self.token is None else "actions need the token"
