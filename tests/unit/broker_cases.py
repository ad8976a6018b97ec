"""What every broker-touching command must do when RabbitMQ cannot be used: the cases.

Shared by ``tests/unit/test_broker_down.py`` (a closed port) and
``tests/integration/test_broker_down_rabbitmq.py`` (the real RabbitMQ refusing
a password or a vhost): the commands, a database with the runs they act on,
and the one check of their output.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FLOWS = str(Path(__file__).resolve().parent / "sample_flows.py")
ORDER = '{"tenant_id": "t1", "amount": 2}'
BOOM = '{"tenant_id": "boom", "amount": 1}'  # fails in its second step

#: A command line per command that needs the broker, given the seeded runs' ids.
COMMANDS: dict[str, Callable[[dict[str, str]], list[str]]] = {
    "submit": lambda ids: ["submit", "--app", f"{FLOWS}:pipeline", "--data", ORDER],
    "emit": lambda ids: ["emit", "fan:go", "--app", f"{FLOWS}:app", "--data", "3"],
    "signal": lambda ids: [
        *("signal", ids["waiting"], "approval", "--data", "true"),
        *("--app", f"{FLOWS}:other_app"),
    ],
    "retry": lambda ids: ["retry", ids["failed"], "--app", f"{FLOWS}:app"],
    "retry --status": lambda ids: ["retry", "--status", "failed", "--app", f"{FLOWS}:app"],
    "recover": lambda ids: ["recover", "--older-than", "0s"],
    "dead retry": lambda ids: ["dead", "retry", "--all", "--app", f"{FLOWS}:app"],
    "status": lambda ids: ["status", "--app", f"{FLOWS}:app"],
    "worker": lambda ids: ["worker", "--app", f"{FLOWS}:pipeline"],
    "dev": lambda ids: ["dev", "--app", f"{FLOWS}:pipeline"],
}

#: pika's and Dramatiq's names for a failed connection: never shown to a user.
CLASS_NAMES = re.compile(
    r"AMQP\w+|Probable\w+Error|ConnectionClosed\w*|StreamLost|IncompatibleProtocol|"
    r"gaierror|SSLError|ConnectionRefusedError|\w+Exception\b"
)


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real ``flowkit`` command, in ``cwd`` (no project configuration above it)."""
    return subprocess.run(
        [sys.executable, "-m", "flowkit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=90,
    )


def seed(tmp: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A SQLite database holding a pending run of a workflow with a signal, and a failed run.

    Returns:
        the environment pointing at it, and the runs' ids (``waiting``, ``failed``).
    """
    env = {"FLOWKIT_DATABASE_URL": f"sqlite:///{tmp / 'flowkit.db'}", "FLOWKIT_APP": ""}
    memory = ["--broker-url", "memory://"]
    done = run(["db", "upgrade"], env, tmp)
    assert done.returncode == 0, done.stderr
    # Stored and never run (nothing serves the memory broker): its step waits to be sent.
    waiting = run(
        ["submit", "--app", f"{FLOWS}:other_app", "--flow", "cli-approval", "--data", "1", *memory],
        env,
        tmp,
    )
    assert waiting.returncode == 0, waiting.stderr
    failed = run(
        ["submit", "--app", f"{FLOWS}:pipeline", "--wait", *memory, "--data", BOOM],
        env,
        tmp,
    )
    assert failed.returncode == 8, failed.stderr
    return env, {"waiting": waiting.stdout.split()[0], "failed": failed.stdout.split()[0]}


def check_one_line(result: subprocess.CompletedProcess[str], masked: str, *words: str) -> str:
    """Exit 6 and exactly one line on stderr, naming the masked URL and the cause in words."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert result.returncode == 6, (result.returncode, line)
    assert line.startswith("flowkit: error: "), line
    assert masked in line, line
    for word in words:
        assert word in line, (word, line)
    assert "Traceback" not in result.stderr + result.stdout
    assert not CLASS_NAMES.search(line), line
    return line


def health_line(result: subprocess.CompletedProcess[str], masked: str, *words: str) -> str:
    """``flowkit health`` reports on stdout: the broker's one line says why; stderr is empty."""
    assert result.returncode == 6, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    broker = [ln for ln in result.stdout.splitlines() if ln.startswith("broker")]
    assert len(broker) == 1, result.stdout
    assert "database  ok" in result.stdout
    for word in (masked, *words):
        assert word in broker[0], (word, broker[0])
    assert not CLASS_NAMES.search(broker[0]), broker[0]
    return broker[0]


def no_run_stored(env: dict[str, str], cwd: Path, before: Any) -> None:
    """``flowkit runs list`` shows the same runs as ``before``: nothing was stored."""
    now = run(["runs", "list", "--json"], env, cwd)
    assert now.returncode == 0, now.stderr
    assert now.stdout == before


class Gate:
    """A TCP port the test opens when it wants: refused at first, then each connection
    accepted and closed at once (a broker that is not there yet), then forwarded.

    ``accepted`` holds the time of each connection, so a test sees the retries of a
    process that retries without a word.
    """

    def __init__(self) -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()  # closed: connections are refused until open()
        self.accepted: list[float] = []
        self.target: tuple[str, int] | None = None
        self._seen = threading.Condition()
        self._server: socket.socket | None = None

    def open(self, target: tuple[str, int] | None = None) -> None:
        """Listen; close each connection (``target`` None) or forward it to ``target``."""
        self.target = target
        if self._server is None:
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", self.port))
            server.listen(16)
            self._server = server
            threading.Thread(target=self._serve, args=(server,), daemon=True).start()

    def wait_accepted(self, count: int, timeout: float) -> bool:
        with self._seen:
            return self._seen.wait_for(lambda: len(self.accepted) >= count, timeout)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def _serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with self._seen:
                self.accepted.append(time.monotonic())
                self._seen.notify_all()
            if self.target is None:
                conn.close()
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class Lines:
    """The stderr of a running process, line by line, waited on with a deadline."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first line (from now on) matching ``pattern``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))

    def rest(self) -> list[str]:
        """Every line, once the process has ended."""
        while (line := self._queue.get(timeout=30)) is not None:
            self.lines.append(line)
        return self.lines


def start_scheduler(env: dict[str, str], cwd: Path, url: str) -> subprocess.Popen[str]:
    """``flowkit scheduler`` on ``url``, retrying every 0.05 s doubling (not 1 s)."""
    return subprocess.Popen(
        [sys.executable, "-m", "flowkit", "scheduler", "--app", f"{FLOWS}:other_app"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={
            **os.environ,
            **env,
            "FLOWKIT_BROKER_URL": url,
            "FLOWKIT_BROKER_RETRY_SECONDS": "0.05",
        },
        cwd=cwd,
    )
