"""``Store``: flowkit's database, composed of one part per job over one connection pool."""

from __future__ import annotations

from .calls import Calls
from .control import Control
from .db import Database
from .deadletters import DeadLetters
from .inuse import LimitsInUse
from .llmcache import LLMCache
from .migrate import check_schema, ensure_schema
from .prune import Prune
from .queries import Queries
from .reads import Reads
from .runs import Runs
from .strands import Strands
from .submits import Submits
from .sweep import Sweep
from .workers import Workers

__all__ = ["Store"]


class Store(Reads):
    """flowkit's database: runs and steps, on SQLite or PostgreSQL.

    The read queries (:class:`~.reads.Reads`) are its own methods; the writes
    are grouped by job: :attr:`runs` (the runtime's hot path), :attr:`control`
    (signals, cancel, deadlines, redrive), :attr:`dead_letters`,
    :attr:`llm_cache`, :attr:`workers`, :attr:`sweep`, :attr:`prune` (retention),
    :attr:`submits` (a batch of runs in one transaction) and :attr:`strands` (runs a
    deploy stranded); :attr:`queries` reads runs page by
    page for a dashboard, :attr:`in_use` what its limits use now. Every part
    shares one :class:`~.db.Database`.

    Parameters:
        url: a SQLAlchemy URL (``sqlite:///flowkit.db``, ``postgresql://...``).
        pool_size: connections kept open; size it to the worker threads.
        pooler: ``"transaction"`` when ``url`` is PgBouncer in transaction mode
            (see :class:`~.db.Database`); ``None``: a direct connection.
        listen_url: a direct PostgreSQL URL for ``LISTEN``, if not ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        pooler: str | None = None,
        listen_url: str | None = None,
    ) -> None:
        db = Database(url, pool_size=pool_size, pooler=pooler, listen_url=listen_url)
        super().__init__(db)
        self.url = url
        self.dialect = db.dialect
        #: submit, claim, complete, fail, retry, recover (see :mod:`.runs`)
        self.runs = Runs(db)
        #: a batch of runs in one transaction (see :mod:`.submits`)
        self.submits = Submits(db)
        #: signals, waits, cancel, deadlines and redrive (see :mod:`.control`)
        self.control = Control(db)
        #: messages that could not run, with their reason (see :mod:`.deadletters`)
        self.dead_letters = DeadLetters(db)
        #: the LLM response cache (see :mod:`.llmcache`)
        self.llm_cache = LLMCache(db)
        #: worker processes and their heartbeats (see :mod:`.workers`)
        self.workers = Workers(db)
        #: the recovery sweep's passes, decided from evidence (see :mod:`.sweep`)
        self.sweep = Sweep(db)
        #: finished runs deleted with their rows, batch by batch (see :mod:`.prune`)
        self.prune = Prune(db)
        #: filtered pages of runs, cached counts (see :mod:`.queries`)
        self.queries = Queries(db)
        #: how much of each limit is in use now (see :mod:`.inuse`)
        self.in_use = LimitsInUse(db)
        #: live runs the deployed definition cannot go on with (see :mod:`.strands`)
        self.strands = Strands(db)
        #: child runs and the steps waiting for them (see :mod:`.calls`)
        self.calls = Calls(db)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        pool_size: int = 10,
        create: bool = True,
        pooler: str | None = None,
        listen_url: str | None = None,
    ) -> Store:
        """A store whose schema is this flowkit's: created or upgraded if needed, or,
        with ``create=False``, only checked (nothing is created, not even a SQLite file).

        Raises:
            SchemaVersionError: the schema is newer; or, with ``create=False``, the
                database or its schema is missing or older.
            StoreError: the database is unavailable.

        .. versionadded:: 0.3
        """
        store = cls(url, pool_size=pool_size, pooler=pooler, listen_url=listen_url)
        try:
            if create:
                store.ensure_schema()
            else:
                store.check_schema()
        except BaseException:
            store.dispose()
            raise
        return store

    def ensure_schema(self) -> None:
        """Create or upgrade the schema if needed (see :func:`.migrate.ensure_schema`)."""
        ensure_schema(self.db.sql)

    def check_schema(self) -> None:
        """Fail clearly unless the schema is exactly this flowkit's."""
        check_schema(self.db.sql)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.db.dispose()
