"""The dashboard in headless Chromium, against real ``flowkit worker`` processes on RabbitMQ and
PostgreSQL. Each page's screenshot is saved under docs/_static/dashboard for the docs.
"""

# The fixtures come from br_kit (a second conftest.py would shadow the top one's
# ``from conftest import``), so test parameters redefine the imported names.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import br_flows
import pytest
from br_kit import HEARTBEAT, Fleet, chrome, fleet, shot  # noqa: F401 - fixtures
from fk_procs import wait_until
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

import flowkit

pytestmark = [pytest.mark.browser, pytest.mark.integration]

Shot = Callable[[str], None]


def _open(chrome: Any, url: str) -> None:
    chrome.get(url)
    # The pages ask before acting (window.confirm); the suite always says yes.
    chrome.execute_script("window.confirm = function () { return true; };")


def _login(chrome: Any, fleet: Fleet) -> None:
    _open(chrome, f"{fleet.url}/login")
    chrome.find_element(By.ID, "token").send_keys(fleet.token)
    chrome.find_element(By.CSS_SELECTOR, "form#login button[type=submit]").click()
    wait_until(lambda: "/login" not in chrome.current_url, 10, "the login to go through")


def _css(chrome: Any, selector: str) -> list[Any]:
    return list(chrome.find_elements(By.CSS_SELECTOR, selector))


def _attrs(chrome: Any, selector: str, attr: str) -> list[str]:
    """Read in one step: the pages refresh themselves, so held elements go stale."""
    script = (
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(e => e.getAttribute(arguments[1]));"
    )
    return list(chrome.execute_script(script, selector, attr))


def _counts(chrome: Any) -> dict[str, int]:
    script = (
        "const out = {}; document.querySelectorAll('#counts [data-status]').forEach("
        "e => { out[e.dataset.status] = parseInt(e.querySelector('.n').textContent, 10); });"
        " return out;"
    )
    return dict(chrome.execute_script(script))


def _status(run: flowkit.Run) -> str:
    return run.status().value


def _wait_status(run: flowkit.Run, status: str, timeout: float = 60) -> None:
    wait_until(lambda: _status(run) == status, timeout, f"run {run.id} to be {status}")


def test_runs_list_filters_counts_and_escapes(chrome: Any, fleet: Fleet, shot: Shot) -> None:
    fleet.workers(2)
    fleet.dashboard()
    ok = [
        br_flows.orders.submit({"ref": f"o{i}", "amount": i}, key=f"tenant-a:{i}") for i in range(3)
    ]
    script = br_flows.orders.submit({"ref": "x", "amount": 1}, key="<script>alert(1)</script>")
    for run in [*ok, script]:
        _wait_status(run, "succeeded")
    fleet.sql("INSERT INTO br_broken VALUES ('book')")
    bad = br_flows.orders.submit({"ref": "bad", "amount": 1}, key="tenant-b:1")
    _wait_status(bad, "failed")

    _open(chrome, f"{fleet.url}/runs?flow=br-orders")
    counted = {
        s: int(n)
        for s, n in fleet.sql(
            "SELECT status, count(*) FROM flowkit_runs WHERE flow = 'br-orders' GROUP BY status"
        )
    }
    shown = _counts(chrome)
    assert {s: n for s, n in shown.items() if n} == counted
    rows = _attrs(chrome, "table#runs tr[data-run-id]", "data-run-id")
    assert len(rows) == sum(counted.values())
    shot("runs")

    _open(chrome, f"{fleet.url}/runs?flow=br-orders&status=failed")
    failed_ids = set(_attrs(chrome, "table#runs tr[data-run-id]", "data-run-id"))
    assert bad.id in failed_ids
    assert failed_ids == {
        r[0] for r in fleet.sql("SELECT id FROM flowkit_runs WHERE status = 'failed'")
    }

    _open(chrome, f"{fleet.url}/runs?key_prefix=tenant-a:")
    keyed = set(_attrs(chrome, "table#runs tr[data-run-id]", "data-run-id"))
    assert keyed == {r.id for r in ok}

    # A key holding a script is text on the page, and nothing ran it.
    _open(chrome, f"{fleet.url}/runs/{script.id}")
    assert chrome.find_element(By.ID, "run-key").text == "<script>alert(1)</script>"
    with pytest.raises(NoAlertPresentException):
        chrome.switch_to.alert.text  # noqa: B018 - raises when no alert is open


def test_a_300_item_fan_out_is_one_node(chrome: Any, fleet: Fleet, shot: Shot) -> None:
    fleet.workers(2)
    fleet.dashboard()
    run = br_flows.fan.submit(300)
    assert run.result(timeout=120) == sum(i * i for i in range(300))
    _open(chrome, f"{fleet.url}/runs/{run.id}")
    (node,) = _css(chrome, "#dag .fanout-node")
    assert "300" in node.text and "succeeded" in node.text
    (summary,) = _css(chrome, ".fanout-summary[data-step=square]")
    assert (
        "\u00d7300" in summary.text and "300 succeeded" in summary.text
    )  # "x300" with a times sign
    shot("run-fanout")


def test_retry_from_the_failed_third_step_reuses_the_first_two(
    chrome: Any, fleet: Fleet, shot: Shot
) -> None:
    fleet.workers(1)
    fleet.dashboard()
    fleet.sql("INSERT INTO br_broken VALUES ('book')")
    run = br_flows.orders.submit({"ref": "r1", "amount": 5})
    _wait_status(run, "failed")
    fleet.sql("DELETE FROM br_broken")
    _login(chrome, fleet)
    _open(chrome, f"{fleet.url}/runs/{run.id}")
    assert "the ledger is closed" in chrome.find_element(By.ID, "run-error").text
    shot("run-failed")
    Select(chrome.find_element(By.NAME, "from_step")).select_by_visible_text("book")
    wait_until(lambda: "from_step=book" in chrome.current_url, 10, "the preview of book")
    chrome.execute_script("window.confirm = function () { return true; };")
    plan = chrome.find_element(By.ID, "retry-plan")
    assert plan.get_attribute("data-start") == "book"
    assert "receive, price" in plan.find_element(By.CSS_SELECTOR, ".reused").text
    chrome.find_element(By.CSS_SELECTOR, "form#retry button[type=submit]").click()
    _wait_status(run, "succeeded")
    assert run.result(timeout=60) == 10
    ran = dict(fleet.sql("SELECT what, count(*) FROM br_ledger GROUP BY what"))
    assert ran == {f"{run.id}:receive": 1, f"{run.id}:price": 1, f"{run.id}:book": 2}


def test_a_signal_from_the_form_and_a_refused_one(chrome: Any, fleet: Fleet, shot: Shot) -> None:
    fleet.workers(1)
    fleet.dashboard()
    run = br_flows.approvals.submit({"ref": "s1", "amount": 1})
    _wait_status(run, "waiting")
    _login(chrome, fleet)
    _open(chrome, f"{fleet.url}/runs/{run.id}")
    shot("run-waiting")
    form = chrome.find_element(By.CSS_SELECTOR, "form#signal[data-signal=decision]")
    form.find_element(By.NAME, "raw_json").send_keys('{"approved": "maybe"}')
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_until(lambda: bool(_css(chrome, "#signal-errors li")), 10, "the errors on the page")
    errors = _css(chrome, "#signal-errors li[data-field]")
    fields = {e.get_attribute("data-field") for e in errors}
    assert {"approver", "approved"} <= fields
    assert _status(run) == "waiting"  # refused: nothing was sent
    chrome.execute_script("window.confirm = function () { return true; };")
    form = chrome.find_element(By.CSS_SELECTOR, "form#signal[data-signal=decision]")
    form.find_element(By.NAME, "raw_json").clear()
    form.find_element(By.NAME, "field.approver").send_keys("ada")
    Select(form.find_element(By.NAME, "field.approved")).select_by_visible_text("true")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert run.result(timeout=60) == "ada:True"


def test_cancel_and_a_dead_letter_retried_from_the_ui(
    chrome: Any, fleet: Fleet, shot: Shot
) -> None:
    fleet.workers(1)
    fleet.dashboard()
    waiting = br_flows.approvals.submit({"ref": "c1", "amount": 1})
    fleet.sql("INSERT INTO br_broken VALUES ('book')")
    failing = br_flows.orders.submit({"ref": "d1", "amount": 3})
    _wait_status(waiting, "waiting")
    _wait_status(failing, "failed")
    _login(chrome, fleet)
    _open(chrome, f"{fleet.url}/runs/{waiting.id}")
    chrome.find_element(By.CSS_SELECTOR, "form#cancel button[type=submit]").click()
    _wait_status(waiting, "cancelled", 10)

    wait_until(
        lambda: fleet.sql("SELECT 1 FROM flowkit_dead_letters WHERE run_id = %s", (failing.id,)),
        60,
        "the failed step's dead letter",
    )
    fleet.sql("DELETE FROM br_broken")
    _open(chrome, f"{fleet.url}/dead")
    shot("dead")
    row = chrome.find_element(By.CSS_SELECTOR, "#dead tr[data-dead-id]")
    row.find_element(By.CSS_SELECTOR, ".dead-retry button[type=submit]").click()
    _wait_status(failing, "succeeded")
    assert failing.result(timeout=60) == 6


def test_workers_page_shows_a_killed_worker_gone(chrome: Any, fleet: Fleet, shot: Shot) -> None:
    first, second = fleet.workers(2)
    fleet.dashboard()

    def alive() -> list[str]:
        _open(chrome, f"{fleet.url}/workers")
        return _attrs(chrome, "#workers tr[data-worker-id]", "data-alive")

    wait_until(lambda: alive().count("true") == 2, 60, "two live workers")
    shot("workers")
    os.kill(second.pid, signal.SIGKILL)
    second.wait(10)
    # Gone within 3 heartbeats (plus a page load): the page reads the heartbeat rows.
    wait_until(lambda: alive().count("false") == 1, 3 * HEARTBEAT + 5, "the killed one gone")
    assert alive().count("true") == 1
    assert first.poll() is None


def test_without_the_token_nothing_changes(chrome: Any, fleet: Fleet, shot: Shot) -> None:
    fleet.workers(1)
    fleet.dashboard()
    run = br_flows.approvals.submit({"ref": "t1", "amount": 1})
    _wait_status(run, "waiting")
    request = urllib.request.Request(
        f"{fleet.url}/api/runs/{run.id}/cancel",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code in (401, 403)
    assert _status(run) == "waiting"
    # The same with the token works, which shows the refusal was about the token.
    request.add_header("Authorization", f"Bearer {fleet.token}")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
        json.loads(answer.read())
    _wait_status(run, "cancelled", 10)

    for page in ("flows", "queues"):
        _open(chrome, f"{fleet.url}/{page}")
        assert chrome.find_element(By.CSS_SELECTOR, "body").get_attribute("data-page") == page
        shot(page)
