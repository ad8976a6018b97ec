"""A 3-node RabbitMQ cluster on this machine, for the cluster scenarios.

Each node runs the real ``rabbitmq-server`` script with its own node name
(``fkc<session>-<i>@localhost``), AMQP and distribution ports (free ones, picked at
start), data and log directories and ``rabbitmq.conf`` in a temporary folder, and
one Erlang cookie in that folder's ``.erlang.cookie`` (``HOME`` points there for the
servers and for ``rabbitmqctl -n NODE``). The system's node on 5672 is never
touched: its env file (which sets the node name) and its ``rabbitmq.conf`` (which
pins 5672) are replaced by our own, its enabled plugins by an empty list, and every
``rabbitmqctl`` call names its node with ``-n``.

Nodes 2 and 3 join node 1 (``stop_app``, ``join_cluster``, ``start_app``); every step
has a timeout, and :meth:`Cluster.close` stops every node (``rabbitmqctl stop``, then
SIGKILL of its process group) and removes the folder, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
#: How long one node may take to boot, and one ``rabbitmqctl`` step to answer.
BOOT_TIMEOUT = 120.0
CTL_TIMEOUT = 60.0
_PAUSE = threading.Event()  # never set: its wait() is a pause between polls


def available() -> bool:
    """Whether this machine has the RabbitMQ server scripts (Debian's package layout)."""
    return SERVER.exists() and CTL.exists() and shutil.which("erl") is not None


def _free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports nothing listens on right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Node:
    """One node of the cluster: its name, ports and folder, and its server process."""

    index: int
    name: str
    port: int
    dist_port: int
    home: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def folder(self) -> Path:
        return self.home / f"n{self.index}"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid_file(self) -> Path:
        return self.folder / "beam.pid"

    def log_tail(self, chars: int = 3000) -> str:
        out = []
        for path in [self.folder / "server.out", *sorted((self.folder / "log").glob("*.log"))]:
            with contextlib.suppress(OSError):
                out.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)


class Cluster:
    """Three (``size``) RabbitMQ nodes clustered together; see the module's docstring."""

    def __init__(self, home: Path, size: int = 3) -> None:
        self.home = home
        tag = secrets.token_hex(3)
        ports = _free_ports(2 * size)
        self.nodes = [
            Node(i + 1, f"fkc{tag}-{i + 1}@localhost", ports[2 * i], ports[2 * i + 1], home)
            for i in range(size)
        ]
        self.env = self._environment()
        for node in self.nodes:
            self._configure(node)

    # -- set-up ----------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        (self.home / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's node name
        (self.home / "enabled_plugins").write_text("[].\n")  # no management listener
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.home),
            RABBITMQ_CONF_ENV_FILE=str(self.home / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.home / "enabled_plugins"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def _configure(self, node: Node) -> None:
        node.folder.mkdir(parents=True, exist_ok=True)
        (node.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{node.port}\n"
            "loopback_users = none\n"
            "log.file.level = info\n"
            "log.console = false\n"
        )

    def node_env(self, node: Node) -> dict[str, str]:
        return {
            **self.env,
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_PORT": str(node.port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CONFIG_FILE": str(node.folder / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(node.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.folder / "log"),
            "RABBITMQ_PID_FILE": str(node.pid_file),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    # -- rabbitmqctl -------------------------------------------------------------
    def ctl(
        self, node: Node, *args: str, timeout: float = CTL_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n NODE ...`` (never without ``-n``: the system's node is not ours)."""
        proc = subprocess.run(
            [str(CTL), "-n", node.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl -n {node.name} {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return proc

    # -- nodes -------------------------------------------------------------------
    def launch(self, node: Node) -> None:
        """Start ``node``'s server process (in a process group of its own)."""
        assert node.proc is None or node.proc.poll() is not None, f"{node.name} is running"
        with open(node.folder / "server.out", "ab") as out:
            node.proc = subprocess.Popen(
                [str(SERVER)],
                env=self.node_env(node),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def await_node(self, node: Node, timeout: float = BOOT_TIMEOUT) -> None:
        """Return once ``node``'s RabbitMQ application runs; fail with its log otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if node.proc is not None and node.proc.poll() is not None:
                rc = node.proc.returncode
                raise RuntimeError(f"{node.name} exited ({rc}):\n{node.log_tail()}")
            try:
                proc = self.ctl(
                    node, "await_startup", "--timeout", str(max(int(left), 1)),
                    timeout=max(left, 1) + 10, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                proc = None
            if proc is not None and proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} did not start in {timeout:g}s:\n{node.log_tail()}")
            _PAUSE.wait(0.5)  # a pause between polls (bounded by the deadline), not a sync

    def start(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Boot every node in parallel, then join 2.. to 1; the seconds it took."""
        began = time.monotonic()
        for node in self.nodes:
            self.launch(node)
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            for f in [pool.submit(self.await_node, n, timeout) for n in self.nodes]:
                f.result()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        self.await_cluster()
        return time.monotonic() - began

    def running_nodes(self, via: Node | None = None) -> list[str]:
        """The nodes ``via`` (default: the first live one) says are running."""
        via = via or next(n for n in self.nodes if self.alive(n))
        out = self.ctl(via, "eval", "rabbit_nodes:all_running().", check=False).stdout
        return re.findall(r"'([^']+)'", out)

    def await_cluster(self, timeout: float = 60) -> None:
        """Wait until every node runs and sees the others."""
        deadline = time.monotonic() + timeout
        want = {n.name for n in self.nodes}
        while set(self.running_nodes()) != want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not formed: running {self.running_nodes()}")
            _PAUSE.wait(0.5)  # a pause between polls of RabbitMQ's own view, not a sync

    def alive(self, node: Node) -> bool:
        return node.proc is not None and node.proc.poll() is None

    def beam_pid(self, node: Node) -> int:
        """The pid of ``node``'s Erlang VM."""
        out = self.ctl(node, "eval", "os:getpid().").stdout
        return int(out.strip().strip('"'))

    def stop_node(self, node: Node) -> None:
        """A clean stop of the whole node (``rabbitmqctl stop``); its process exits."""
        self.ctl(node, "stop", timeout=CTL_TIMEOUT)
        if node.proc is not None:
            node.proc.wait(CTL_TIMEOUT)

    def kill_node(self, node: Node) -> int:
        """SIGKILL of ``node``'s Erlang VM (as a lost machine); returns the pid killed."""
        pid = self.beam_pid(node)
        os.kill(pid, signal.SIGKILL)
        if node.proc is not None:
            node.proc.wait(CTL_TIMEOUT)
        return pid

    def restart_node(self, node: Node, timeout: float = BOOT_TIMEOUT) -> None:
        """Start a stopped node again (it rejoins its cluster) and wait for it."""
        self.launch(node)
        self.await_node(node, timeout)
        self.await_cluster(timeout)

    # -- queues --------------------------------------------------------------------
    def leaders(self, vhost: str = "/") -> dict[str, str]:
        """``{queue: leader node}`` of every quorum queue in ``vhost``."""
        via = next(n for n in self.nodes if self.alive(n))
        out = self.ctl(
            via, "list_queues", "-p", vhost, "name", "type", "leader", "--no-table-headers", "-q"
        ).stdout
        found = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "quorum":
                found[parts[0]] = parts[2]
        return found

    def connections(self, vhost: str) -> list[tuple[str, str]]:
        """``(connection_name, node)`` of every client connection to ``vhost``."""
        via = next(n for n in self.nodes if self.alive(n))
        out = self.ctl(
            via, "list_connections", "vhost", "pid", "client_properties",
            "--no-table-headers", "-q",
        ).stdout  # fmt: skip
        found = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) != 3 or parts[0] != vhost:
                continue
            node = re.search(r"<([^<>.]+@[^<>.]+)\.", parts[1])
            name = re.search(r'\{"connection_name","([^"]*)"\}', parts[2])
            if node and name:
                found.append((name.group(1), node.group(1)))
        return found

    def add_vhost(self, vhost: str) -> str:
        """A vhost of the cluster with guest's permissions; its URL list, node 1 first."""
        first = self.nodes[0]
        self.ctl(first, "add_vhost", vhost)
        self.ctl(first, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return ";".join(f"{n.url}{vhost}" for n in self.nodes)

    # -- tear-down ------------------------------------------------------------------
    def close(self) -> None:
        """Stop every node whatever state it is in, then remove the folder."""
        for node in self.nodes:
            if self.alive(node):
                with contextlib.suppress(Exception):
                    self.ctl(node, "stop", timeout=20, check=False)
        for node in self.nodes:
            if node.proc is None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.proc.pid, signal.SIGKILL)  # the script, the VM and its helpers
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(20)
        shutil.rmtree(self.home, ignore_errors=True)
