"""The real RabbitMQ refusing a password or a vhost: one line in words, exit 6, per command.

And the scheduler riding out an outage: one WARNING when it starts, quiet retries,
one INFO when RabbitMQ is back (through a port the test opens, then forwards to
the real RabbitMQ, so the real one is never stopped).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

# The shared cases live beside the unit tests.
from broker_cases import (
    CLASS_NAMES,
    COMMANDS,
    FLOWS,
    Gate,
    Lines,
    check_one_line,
    health_line,
    no_run_stored,
    run,
    seed,
    start_scheduler,
)

pytestmark = pytest.mark.integration

Seeded = tuple[Path, dict[str, str], dict[str, str]]


def _modes(rabbitmq_url: str) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """mode -> (URL, masked URL, the words the line must say)."""
    parts = urlsplit(rabbitmq_url)
    base = f"{parts.hostname}:{parts.port or 5672}"
    return {
        "wrong password": (
            f"amqp://guest:nope@{base}/",
            f"amqp://guest:***@{base}/",
            ("refused the login of user 'guest': wrong user name or password",),
        ),
        "unknown vhost": (
            f"amqp://guest:guest@{base}/flowkit-no-such-vhost",
            f"amqp://guest:***@{base}/flowkit-no-such-vhost",
            ("refused access to vhost 'flowkit-no-such-vhost': it does not exist",),
        ),
    }


MODES = ["wrong password", "unknown vhost"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    tmp = tmp_path_factory.mktemp("broker-refuses")
    env, ids = seed(tmp)
    return tmp, env, ids


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_says_why_rabbitmq_refused(
    command: str, mode: str, seeded: Seeded, rabbitmq_url: str
) -> None:
    tmp, env, ids = seeded
    url, masked, words = _modes(rabbitmq_url)[mode]
    env = {**env, "FLOWKIT_BROKER_URL": url}
    before = run(["runs", "list", "--json"], env, tmp).stdout
    check_one_line(run(COMMANDS[command](ids), env, tmp), masked, *words)
    no_run_stored(env, tmp, before)


@pytest.mark.parametrize("mode", MODES)
def test_health_says_why(mode: str, seeded: Seeded, rabbitmq_url: str) -> None:
    tmp, env, _ = seeded
    url, masked, words = _modes(rabbitmq_url)[mode]
    result = run(["health", "--app", f"{FLOWS}:app"], {**env, "FLOWKIT_BROKER_URL": url}, tmp)
    health_line(result, masked, *words)


def test_the_scheduler_logs_an_outage_once_and_its_end_once(
    seeded: Seeded, rabbitmq_url: str
) -> None:
    tmp, env, _ = seeded
    parts = urlsplit(rabbitmq_url)
    gate = Gate()
    url = f"amqp://guest:guest@127.0.0.1:{gate.port}{parts.path or '/'}"
    masked = f"amqp://guest:***@127.0.0.1:{gate.port}{parts.path or '/'}"
    proc = start_scheduler(env, tmp, url)
    lines = Lines(proc.stderr)
    try:
        warning = lines.wait_for(r" WARNING ", timeout=60)
        gate.open()  # still no RabbitMQ: each retry is hung up on
        assert gate.wait_accepted(3, timeout=30), gate.accepted
        gate.open(target=(parts.hostname or "127.0.0.1", parts.port or 5672))  # it is back
        back = lines.wait_for(r"is reachable again", timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        gate.close()
    rest = lines.rest()
    assert code == 0, rest
    assert f"RabbitMQ at {masked} is unreachable: connection refused" in warning
    assert f" INFO [{proc.pid}] flowkit.scheduler: RabbitMQ at {masked} is reachable again" in back
    assert [ln for ln in rest if " WARNING " in ln or " ERROR " in ln] == [warning]
    assert [ln for ln in rest if "reachable again" in ln] == [back]
    assert not any("Traceback" in ln or CLASS_NAMES.search(ln) for ln in rest), rest
