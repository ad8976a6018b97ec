"""A signal without payload is not a timeout: ``flowkit.TimedOut``, null payloads, late signals."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from wait_flows import Expense, Note, approvals, gated, notes, untyped
from wait_flows import app as waits_app

import flowkit
from flowkit.testing import VirtualClock, embedded, run_to_completion, wait_for_status

HERE = Path(__file__).parent
FLOWS = str(HERE / "wait_flows.py")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def app(tmp_path: Path, clock: VirtualClock) -> Iterator[flowkit.App]:
    with embedded(waits_app, tmp_path, clock=clock) as a:
        yield a


def test_a_timeout_gives_the_step_timed_out(app: flowkit.App, clock: VirtualClock) -> None:
    run = approvals.submit({"amount": 10})
    wait_for_status(run, "waiting")
    clock.advance(seconds=30)
    assert run_to_completion(run) == "auto-rejected: no decision within 30s"
    review = {s.name: s for s in run.steps()}["review"]
    assert review.input == {"value": {"amount": 10}, "signal": None, "timed_out": True}


def test_a_signal_without_payload_is_refused_and_nothing_is_stored(app: flowkit.App) -> None:
    run = approvals.submit({"amount": 10})
    wait_for_status(run, "waiting")
    with pytest.raises(flowkit.InputValidationError) as refused:
        run.signal("approval")
    assert str(refused.value) == (
        "signal 'approval' needs a payload: step 'review' takes Approval, not None "
        "(nothing was sent)"
    )
    with pytest.raises(flowkit.InputValidationError, match="needs a payload"):
        run.signal("approval", None)
    assert app.store.get_signals(run.id) == []
    assert run.status() is flowkit.RunStatus.WAITING
    assert run.signal("approval", {"approver": "ana", "approved": False}) is True
    assert run_to_completion(run) == "rejected by ana"


def test_any_is_not_explicitly_nullable(app: flowkit.App) -> None:
    run = untyped.submit({"amount": 1})
    with pytest.raises(flowkit.InputValidationError, match="takes Any, not None"):
        run.signal("anything")
    assert run.signal("anything", {"x": 1}) is True
    assert run_to_completion(run) == "{'x': 1}"


def test_a_null_payload_is_not_a_timeout(app: flowkit.App, clock: VirtualClock) -> None:
    empty, written, silent = (notes.submit({"amount": n}) for n in (1, 2, 3))
    for run in (empty, written, silent):
        wait_for_status(run, "waiting")
    assert empty.signal("note") is True  # the type lists None: an empty note is a note
    assert written.signal("note", Note(text="fine")) is True
    assert run_to_completion(empty, written) == ["empty note", "note: fine"]
    assert app.store.get_signals(empty.id)[0].payload is None
    clock.advance(minutes=1)
    assert run_to_completion(silent) == "timed out"


def test_a_payload_shaped_like_timed_out_is_only_a_payload(app: flowkit.App) -> None:
    run = approvals.submit({"amount": 3})
    with pytest.raises(flowkit.InputValidationError, match="approver"):
        run.signal("approval", {"signal": "approval", "waited": 30})
    assert app.store.get_signals(run.id) == []


def test_a_late_signal_after_the_timeout_is_refused(app: flowkit.App, clock: VirtualClock) -> None:
    run = gated.submit({"amount": 5})
    wait_for_status(run, "waiting")
    clock.advance(seconds=30)
    # gated_review ran on its timeout; the run is live, waiting for "go" now.
    assert wait_for_status(run, "waiting") is flowkit.RunStatus.WAITING
    with pytest.raises(flowkit.SignalRejected, match="stopped waiting for signal 'approval'"):
        run.signal("approval", {"approver": "late", "approved": True})
    assert app.store.get_signals(run.id) == []
    assert run.signal("go", True) is True
    assert run_to_completion(run) == "timed out"


def test_a_signal_to_a_finished_run_is_refused(app: flowkit.App, clock: VirtualClock) -> None:
    run = notes.submit({"amount": 5})
    wait_for_status(run, "waiting")
    clock.advance(minutes=1)
    assert run_to_completion(run) == "timed out"
    with pytest.raises(flowkit.SignalRejected, match="is succeeded"):
        run.signal("note", {"text": "too late"})
    assert app.store.get_signals(run.id) == []


# -- declaring --------------------------------------------------------------------
class Vote(BaseModel):
    yes: bool


def test_timed_out_needs_a_timeout_and_a_payload_type() -> None:
    wf = flowkit.Workflow("wf-bad")
    with pytest.raises(flowkit.FlowDefinitionError, match="has no timeout="):

        @wf.step(wait_for="vote")
        def no_timeout(e: Expense, vote: Vote | flowkit.TimedOut) -> bool:
            return True

    with pytest.raises(flowkit.FlowDefinitionError, match="name the payload's type"):

        @wf.step(wait_for="vote", timeout="1m")
        def only_timeout(e: Expense, vote: flowkit.TimedOut) -> bool:
            return True


def test_none_on_a_timeout_is_deprecated_but_still_works(tmp_path: Path) -> None:
    wf = flowkit.Workflow("wf-lenient")
    with pytest.warns(DeprecationWarning, match=r"Vote \| None \| flowkit.TimedOut") as caught:

        @wf.step(wait_for="vote", timeout="1m")
        def lenient(e: Expense, vote: Vote | None) -> str:
            return "nobody voted" if vote is None else "voted"

    assert caught[0].filename == __file__  # points at the declaration, not at flowkit
    clock = VirtualClock()
    with embedded(flowkit.App("lenient", flows=[wf]), tmp_path, clock=clock):
        run = wf.submit({"amount": 1})
        wait_for_status(run, "waiting")
        clock.advance(minutes=1)
        assert run_to_completion(run) == "nobody voted"


def test_timed_out_says_which_signal_and_how_long() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the TimedOut form warns about nothing
        wf = flowkit.Workflow("wf-typed")

        @wf.step(wait_for="vote", timeout="2h")
        def typed(e: Expense, vote: Vote | flowkit.TimedOut) -> str:
            return "x"

    value = typed.parse_input({"value": {"amount": 1}, "signal": None, "timed_out": True})
    assert value == (Expense(amount=1), flowkit.TimedOut("vote", timedelta(hours=2)))
    assert typed.signal_type is Vote and not typed.signal_optional and typed.runs_on_timeout


# -- the command line ---------------------------------------------------------------
def test_flowkit_signal_without_data_is_refused_unless_the_type_lists_none(
    tmp_path: Path, cli: Any
) -> None:
    with embedded(waits_app, tmp_path) as a:
        a.configure(embedded_worker=False)
        strict, lenient = approvals.submit({"amount": 1}), notes.submit({"amount": 2})
        env = {
            "FLOWKIT_BROKER_URL": "memory://",
            "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'flowkit-test.db'}",
            "FLOWKIT_DEBUG": "",
        }
        refused = cli("signal", strict.id, "approval", "--app", f"{FLOWS}:app", env=env)
        assert refused.returncode == 4, refused.stderr
        assert "Traceback" not in refused.stderr
        assert refused.stderr.strip().splitlines() == [
            "flowkit: error: signal 'approval' needs a payload: step 'review' takes Approval, "
            "not None (nothing was sent); pass it with --data JSON"
        ]
        assert a.store.get_signals(strict.id) == []

        taken = cli(
            "signal", lenient.id, "note", "--data", "null", "--app", f"{FLOWS}:app", env=env
        )
        assert taken.returncode == 0, taken.stderr
        assert [(s.name, s.payload) for s in a.store.get_signals(lenient.id)] == [("note", None)]
