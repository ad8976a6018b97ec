"""``flowkit.Progress``: plain lines off a terminal, quiet for short work, a bar on one."""

from __future__ import annotations

import io
import threading

import pytest

import flowkit
from flowkit.progress import progress_every


class Lines(io.StringIO):
    """A non-terminal stream that signals each write (no sleeps: the test waits on it)."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = threading.Event()

    def write(self, text: str) -> int:
        n = super().write(text)
        self.wrote.set()
        return n


def test_a_line_at_each_tenth_and_the_last_one_reaches_the_total() -> None:
    out = Lines()
    with flowkit.Progress("submitted", total=20, stream=out, every=0) as progress:
        for _ in range(20):
            progress.advance()
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        f"submitted {n}/20 ({5 * n}%)" for n in range(2, 21, 2)
    ]
    assert lines[-1].endswith("/s")


def test_short_work_prints_nothing() -> None:
    out = Lines()
    with flowkit.Progress("finished", total=5, stream=out, every=60) as progress:
        for _ in range(5):
            progress.advance()
    assert out.getvalue() == ""


def test_a_line_every_few_seconds_while_nothing_finishes() -> None:
    out = Lines()
    with flowkit.Progress("finished", total=3, stream=out, every=0.05) as progress:
        progress.advance()
        assert out.wrote.wait(10), "no periodic line"
        progress.advance(2)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("finished 1/3 (33%)")
    assert lines[-1].startswith("finished 3/3 (100%)")  # the last line at the end


def test_an_unknown_total_is_counted_and_can_be_set_later() -> None:
    progress = flowkit.Progress("re-driven", stream=Lines(), every=0)
    progress.advance(3)
    assert progress.line().startswith("re-driven 3, ")
    progress.update(3, total=4)
    assert progress.line().startswith("re-driven 3/4 (75%), ")


def test_the_bar_draws_on_a_terminal() -> None:
    out = Lines()
    with flowkit.Progress("submitted", total=4, stream=out, bar=True) as progress:
        progress.advance(4)
    drawn = out.getvalue()
    assert "submitted" in drawn and "4/4" in drawn
    assert "\x1b[" in drawn  # terminal control codes, not plain lines


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_PROGRESS_EVERY", "2.5")
    assert progress_every() == 2.5
    monkeypatch.setenv("FLOWKIT_PROGRESS_EVERY", "soon")
    with pytest.raises(flowkit.ConfigurationError, match="FLOWKIT_PROGRESS_EVERY"):
        progress_every()
