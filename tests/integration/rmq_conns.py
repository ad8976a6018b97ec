"""RabbitMQ connections by their client-provided name (``flowkit <worker id> <pid>``).

Tests close only the connections of the processes they started, by name, with
``rabbitmqctl close_connection``: other tests run against the same RabbitMQ.
"""

from __future__ import annotations

import re
import shutil
import subprocess


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    ctl = shutil.which("rabbitmqctl")
    assert ctl, "rabbitmqctl is needed to list and close connections"
    done = subprocess.run([ctl, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


_NAME = re.compile(r'\{"connection_name","((?:[^"\\]|\\.)*)"\}')


def connections(vhost: str) -> list[tuple[str, str]]:
    """``(connection pid, client-provided name)`` of every connection in ``vhost``."""
    out = rabbitmqctl(
        "list_connections", "-q", "--no-table-headers", "pid", "vhost", "client_properties"
    )
    found = []
    for line in out.splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3 and parts[1] == vhost:
            m = _NAME.search(parts[2])
            found.append((parts[0], m.group(1) if m else ""))
    return found


def close_named(vhost: str, match: str, why: str = "flowkit test") -> int:
    """Close the connections of ``vhost`` whose name contains ``match``; how many."""
    pids = [pid for pid, name in connections(vhost) if match in name]
    for pid in pids:
        rabbitmqctl("close_connection", pid, why)
    return len(pids)


def vhost_of(url: str) -> str:
    """The vhost of an AMQP URL (``/`` when it names none)."""
    path = url.split("://", 1)[-1].split("/", 1)
    return path[1] if len(path) > 1 and path[1] else "/"
