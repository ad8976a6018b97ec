"""``Run.wait`` on the embedded default: ``$FLOWKIT_LISTEN``, and no listener on SQLite.

The listener itself (PostgreSQL, a worker process ending the run, a killed
connection) is tested in ``tests/integration/test_listen_rabbitmq.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import flowkit
from flowkit.run import listen_enabled
from flowkit.testing import embedded


@flowkit.stage
def plus_one(n: int) -> int:
    return n + 1


pipeline = flowkit.Pipeline("rw-plus", [plus_one])
app = flowkit.App("rw", flows=[pipeline])


@pytest.mark.parametrize("value", ["", "1", "true", " ON "])
def test_flowkit_listen_is_on_unless_turned_off(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWKIT_LISTEN", value)
    assert listen_enabled() is True


@pytest.mark.parametrize("value", ["0", "false", "Off", "no"])
def test_flowkit_listen_off(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_LISTEN", value)
    assert listen_enabled() is False


def test_a_bad_flowkit_listen_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_LISTEN", "sometimes")
    with pytest.raises(flowkit.ConfigurationError, match=r"FLOWKIT_LISTEN .* not 'sometimes'"):
        listen_enabled()


def test_on_sqlite_wait_starts_no_listener_and_is_woken_in_process(tmp_path: Path) -> None:
    with embedded(app, tmp_path) as a:
        runs = [pipeline.submit(i) for i in range(5)]
        assert [r.result(timeout=30) for r in runs] == [1, 2, 3, 4, 5]
        assert a.finishes.listener is None
        assert a.finishes.notified == 0
        assert all(a.finishes.waiters(r.id) == 0 for r in runs)
        a.finishes.close()  # nothing to stop: harmless
        assert pipeline.submit(9).result(timeout=30) == 10
