"""A PgBouncer of the test's own, in transaction mode, in front of the local PostgreSQL.

Debian's ``pgbouncer`` (1.18; ``.ci/run`` installs it) runs from a temporary folder
with its own ini, on a free port of 127.0.0.1, for any database of the local
PostgreSQL (``* = host=127.0.0.1 port=5432``); the system's pgbouncer service and
/etc/pgbouncer are never used. It refuses to run as root, so as root it runs as a
dedicated system user (:data:`USER`, created once if missing). It is started in the
foreground in its own process group and killed whatever happens.

Skipped when pgbouncer is missing, except under ``CI=true``, where that fails, as
for the other services (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from helpers import wait_until

#: The system user pgbouncer runs as when the tests run as root.
USER = "flowkit-pgbouncer"
IN_CI = os.environ.get("CI", "").lower() == "true"
#: What a worker behind PgBouncer must never log (the failures of session state).
POOLER_ERRORS = (
    r"DuplicatePreparedStatement|InvalidSqlStatementName|unsupported startup parameter|"
    r"prepared statement \S+ (already exists|does not exist)"
)


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer",) if os.access(p, os.X_OK)), None
    )


def ensure_user() -> str | None:
    """The user to run pgbouncer as: :data:`USER` (created if missing) as root, else
    ``None`` (run as the current user)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
            capture_output=True,
        )
    return USER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


INI = """\
[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {dir}
pidfile = {dir}/pgbouncer.pid
logfile = {dir}/pgbouncer.log
auth_type = trust
auth_file = {dir}/userlist.txt
admin_users = postgres
pool_mode = transaction
max_client_conn = {max_client_conn}
default_pool_size = {pool_size}
reserve_pool_size = 0
server_lifetime = 3600
"""


@dataclass
class Bouncer:
    """One running PgBouncer: its port, its folder, and URLs through it."""

    port: int
    dir: Path
    pool_size: int

    def url(self, direct_url: str) -> str:
        """``direct_url`` (a database of the local PostgreSQL) through this PgBouncer."""
        assert "@127.0.0.1:5432/" in direct_url, direct_url
        return direct_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{self.port}/")

    def show(self, what: str) -> list[dict[str, object]]:
        """``SHOW <what>`` (``POOLS``, ``CLIENTS``, ...) on PgBouncer's admin console."""
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/pgbouncer"
        with psycopg.connect(admin, autocommit=True) as conn:
            cur = conn.execute(f"SHOW {what}")
            names = [c.name for c in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def clients(self, database: str) -> int:
        """Client connections to ``database`` now."""
        return sum(1 for c in self.show("CLIENTS") if c.get("database") == database)

    def log(self) -> str:
        """pgbouncer's log file."""
        return _read(self.dir / "pgbouncer.log")

    def output(self) -> str:
        """What pgbouncer printed (before its log file was open), then its log."""
        return f"{_read(self.dir / 'stdout.log')}\n{self.log()}"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@contextlib.contextmanager
def running_pgbouncer(
    *, pool_size: int = 20, max_client_conn: int = 400, timeout: float = 20, attempts: int = 3
) -> Iterator[Bouncer]:
    """A PgBouncer in transaction mode, ready for connections inside the block; stopped
    (its process group killed) and its folder removed on the way out, whatever happens.

    A port taken between :func:`free_port` and pgbouncer's ``bind`` costs another try,
    on another port, up to ``attempts`` times.

    Raises:
        AssertionError: it exited or did not accept connections within ``timeout``.
    """
    binary = pgbouncer_binary()
    assert binary, "pgbouncer is not installed"
    user = ensure_user()
    folder = Path(tempfile.mkdtemp(prefix="flowkit-pgbouncer-"))
    (folder / "userlist.txt").write_text('"postgres" ""\n')
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for attempt in range(1, attempts + 1):
            bouncer = Bouncer(port=free_port(), dir=folder, pool_size=pool_size)
            ini = folder / "pgbouncer.ini"
            ini.write_text(
                INI.format(
                    port=bouncer.port,
                    dir=folder,
                    pool_size=pool_size,
                    max_client_conn=max_client_conn,
                )
            )
            procs.append(_spawn([binary, str(ini)], user, folder))
            try:
                _wait_ready(procs[-1], bouncer, timeout)
                break
            except _PortTaken:
                _stop(procs[-1])
                if attempt == attempts:
                    raise AssertionError(f"no free port in {attempts} tries") from None
        yield bouncer
    finally:
        for proc in procs:
            _stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def _spawn(argv: list[str], user: str | None, folder: Path) -> subprocess.Popen[bytes]:
    """pgbouncer in the foreground, as ``user`` (``runuser``), in a process group of its own."""
    if user is not None:
        for f in (folder, *folder.iterdir()):
            shutil.chown(f, user)
        argv = ["runuser", "-u", user, "--", *argv]
    with open(folder / "stdout.log", "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


class _PortTaken(Exception):
    pass


def _wait_ready(proc: subprocess.Popen[bytes], bouncer: Bouncer, timeout: float) -> None:
    """Until pgbouncer says it listens on its TCP port and accepts a connection there (it
    keeps running on its unix socket alone when the port was taken: :class:`_PortTaken`)."""
    where = f"127.0.0.1:{bouncer.port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited with {proc.returncode}:\n{bouncer.output()}")
        said = bouncer.log()
        if f"cannot listen on {where}" in said:
            raise _PortTaken(where)
        return f"listening on {where}" in said and _accepts(bouncer.port)

    wait_until(ready, timeout, interval=0.05, what="pgbouncer to accept connections")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to its process group (runuser and pgbouncer), then SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture(name="pgbouncer")
def pgbouncer_fixture(pg_admin_url: str) -> Iterator[Bouncer]:
    """A PgBouncer in transaction mode for this test (``bouncer.url(pg_url)``)."""
    if pgbouncer_binary() is None:
        if IN_CI:
            pytest.fail("pgbouncer is not installed, and CI=true requires it")
        pytest.skip("pgbouncer is not installed")
    with running_pgbouncer() as bouncer:
        yield bouncer
