"""The web dashboard and its HTTP API, through Starlette's TestClient on the embedded default."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

from starlette.testclient import TestClient

import flowkit
from flowkit.dashboard import create_app
from flowkit.status import RunStatus
from flowkit.testing import embedded, wait_for_status

TOKEN = "dashboard-test-token-0123"
SECRET = "sk-live-very-secret-value-42"
_flaky = threading.Event()  # set: the flaky step fails


class Order(BaseModel):
    ref: str
    amount: int


class Card(BaseModel):
    owner: str
    number: SecretStr


class Approval(BaseModel):
    approver: str
    ok: bool


@flowkit.stage
def passthrough(o: Order) -> Order:
    return o


echo = flowkit.Pipeline("echo", [passthrough])

fan = flowkit.Workflow("fan", schedule="*/5 * * * *")


@fan.step
def split(n: int) -> list[int]:
    return list(range(n))


@fan.step(after=split, each=True)
def work(i: int) -> int:
    return i * 2


approvals = flowkit.Workflow("approvals", on="expense:submitted")


@approvals.step
def receive(o: Order) -> Order:
    return o


@approvals.step(after=receive, wait_for="approval")
def decide(o: Order, approval: Approval) -> str:
    return f"{o.ref}:{approval.approver}:{approval.ok}"


flaky = flowkit.Workflow("flaky")


@flaky.step(retries=0)
def first(o: Order) -> Order:
    return o


@flaky.step(after=first, retries=0)
def second(o: Order) -> int:
    if _flaky.is_set():
        raise flowkit.PermanentError("the <b>second</b> step broke")
    return o.amount


@flowkit.stage
def keep_card(c: Card) -> Card:
    return c


cards = flowkit.Pipeline("cards", [keep_card])

app = flowkit.App("dashboard-tests", flows=[echo, fan, approvals, flaky, cards])


@pytest.fixture
def fk(tmp_path: Path) -> Iterator[flowkit.App]:
    _flaky.clear()
    with embedded(app, tmp_path, threads=4) as a:
        a.store  # noqa: B018 - the schema exists, as a worker would have made it
        yield a


def _client(a: flowkit.App, **kwargs: Any) -> TestClient:
    kwargs.setdefault("token", TOKEN)
    return TestClient(create_app(a, **kwargs))


@pytest.fixture
def client(fk: flowkit.App) -> TestClient:
    return _client(fk)


def login(c: TestClient) -> None:
    page = c.get("/login")
    r = c.post(
        "/login",
        data={"token": TOKEN, "csrf": csrf_of(page.text), "next": "/runs"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def waiting_run(a: flowkit.App, ref: str = "e-1") -> flowkit.Run:
    run = a.submit("approvals", {"ref": ref, "amount": 5})
    wait_for_status(run, RunStatus.WAITING, timeout=10)
    return run


# -- basics -------------------------------------------------------------------------------
def test_healthz_and_root(client: TestClient) -> None:
    r = client.get("/healthz")
    assert (r.status_code, r.text) == (200, "ok")
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/runs"
    assert "script-src 'self'" in client.get("/runs").headers["content-security-policy"]


def test_runs_page_counts_filters_and_pagination(fk: flowkit.App, client: TestClient) -> None:
    runs = [fk.submit("echo", {"ref": f"r{i}", "amount": i}, key=f"k-{i}") for i in range(5)]
    for r in runs:
        r.result(timeout=10)
    page = client.get("/runs").text
    assert re.search(r'data-status="succeeded"[^>]*>.*?<span class="n">5</span>', page, re.S)
    assert len(re.findall(r"<tr data-run-id=", page)) == 5
    newest_first = re.findall(r'<tr data-run-id="(\w+)"', page)
    assert newest_first == [r.id for r in reversed(runs)]

    one = client.get("/runs", params={"key_prefix": "k-3"}).text
    assert re.findall(r'<tr data-run-id="(\w+)"', one) == [runs[3].id]
    assert 'value="k-3"' in one  # the filter stays in the form
    none = client.get("/runs", params={"status": "failed"}).text
    assert "<tr data-run-id=" not in none

    first = client.get("/runs", params={"limit": "2"}).text
    older = re.search(r'id="older" href="([^"]+)"', first)
    assert older
    second = client.get(older.group(1).replace("&amp;", "&")).text
    ids1 = re.findall(r'<tr data-run-id="(\w+)"', first)
    ids2 = re.findall(r'<tr data-run-id="(\w+)"', second)
    assert len(ids1) == len(ids2) == 2 and not set(ids1) & set(ids2)

    api = client.get("/api/runs", params={"limit": "2", "key_prefix": "k-"}).json()
    assert [r["id"] for r in api["runs"]] == ids1 and api["next_cursor"]
    assert api["counts"]["succeeded"] == 5
    assert client.get("/api/runs", params={"status": "nope"}).status_code == 400
    assert client.get("/api/runs", params={"cursor": "@@not-a-cursor@@"}).status_code == 400
    assert client.get("/api/runs", params={"limit": "9999"}).status_code == 400
    assert "error" in client.get("/api/runs", params={"since": "yesterday"}).json()
    assert client.get("/runs", params={"status": "nope"}).status_code == 400


def test_run_page_draws_a_fan_out_as_one_node(fk: flowkit.App, client: TestClient) -> None:
    run = fk.submit("fan", 30)
    run.result(timeout=20)
    page = client.get(f"/runs/{run.id}").text
    assert 'id="dag"' in page
    nodes = re.findall(r'<g class="node fanout-node[^"]*" data-step="work"', page)
    assert len(nodes) == 1
    assert "work \u00d730" in page and "30 succeeded" in page
    assert 'class="slowest-items"' in page
    api = client.get(f"/api/runs/{run.id}").json()
    assert api["status"] == "succeeded" and len(api["steps"]) == 31
    work_group = next(g for g in api["groups"] if g["name"] == "work")
    assert work_group["counts"] == {"succeeded": 30} and work_group["each"]


# -- actions ------------------------------------------------------------------------------
def test_retry_preview_then_retry(fk: flowkit.App, client: TestClient) -> None:
    _flaky.set()
    run = fk.submit("flaky", {"ref": "f", "amount": 3})
    wait_for_status(run, RunStatus.FAILED, timeout=10)
    login(client)
    page = client.get(f"/runs/{run.id}").text
    assert 'id="retry-plan" data-start="second"' in page
    assert "the &lt;b&gt;second&lt;/b&gt; step broke" in page
    assert 'form id="retry"' in page
    chosen = client.get(f"/runs/{run.id}", params={"from_step": "first"}).text
    assert 'data-start="first"' in chosen
    preview = client.get(f"/api/runs/{run.id}/retry-preview", params={"from_step": "first"})
    assert preview.json()["rerun"] == ["first", "second"]
    assert client.get(f"/api/runs/{run.id}/retry-preview?from_step=zzz").status_code == 404

    _flaky.clear()
    r = client.post(
        f"/runs/{run.id}/retry",
        data={"csrf": csrf_of(page), "from_step": ""},
        follow_redirects=False,
    )
    assert r.status_code == 303 and "done=retried" in r.headers["location"]
    assert run.result(timeout=10) == 3
    api = client.post(f"/api/runs/{run.id}/retry", json={}, headers=bearer())
    assert api.status_code == 409  # a live or succeeded run with no failed step


def test_cancel_from_the_page_and_the_api(fk: flowkit.App, client: TestClient) -> None:
    run = waiting_run(fk)
    login(client)
    page = client.get(f"/runs/{run.id}").text
    assert 'form id="cancel"' in page and 'id="signal"' in page
    r = client.post(f"/runs/{run.id}/cancel", data={"csrf": csrf_of(page)})
    assert r.status_code == 200 and "The run was cancelled." in r.text
    assert run.status() is RunStatus.CANCELLED
    other = waiting_run(fk, "e-2")
    api = client.post(f"/api/runs/{other.id}/cancel", json={}, headers=bearer())
    assert api.json() == {"cancelled": True}
    assert client.post("/api/runs/nope/cancel", json={}, headers=bearer()).status_code == 404


def test_signal_invalid_shows_field_errors_and_valid_releases(
    fk: flowkit.App, client: TestClient
) -> None:
    run = waiting_run(fk)
    login(client)
    page = client.get(f"/runs/{run.id}").text
    assert 'name="field.approver"' in page and 'name="field.ok"' in page
    bad = client.post(
        f"/runs/{run.id}/signal",
        data={"csrf": csrf_of(page), "signal": "approval", "field.approver": "<i>ana</i>"},
    )
    assert bad.status_code == 422
    assert 'class="error-message"' in bad.text and 'data-field="ok"' in bad.text
    assert "&lt;i&gt;ana&lt;/i&gt;" in bad.text  # the typed value is kept, escaped
    assert run.status() is RunStatus.WAITING
    raw = client.post(
        f"/runs/{run.id}/signal",
        data={"csrf": csrf_of(page), "signal": "approval", "raw_json": "{not json"},
    )
    assert raw.status_code == 422 and run.status() is RunStatus.WAITING
    good = client.post(
        f"/runs/{run.id}/signal",
        data={
            "csrf": csrf_of(page),
            "signal": "approval",
            "field.approver": "ana",
            "field.ok": "true",
        },
        follow_redirects=False,
    )
    assert good.status_code == 303 and "done=signalled" in good.headers["location"]
    assert run.result(timeout=10) == "e-1:ana:True"


def test_signal_through_the_api(fk: flowkit.App, client: TestClient) -> None:
    run = waiting_run(fk)
    bad = client.post(
        f"/api/runs/{run.id}/signals/approval", json={"data": {"ok": "x"}}, headers=bearer()
    )
    assert bad.status_code == 422
    assert {tuple(e["loc"]) for e in bad.json()["errors"]} >= {("approver",)}
    ok = client.post(
        f"/api/runs/{run.id}/signals/approval",
        json={"data": {"approver": "bo", "ok": False}},
        headers=bearer(),
    )
    assert ok.json() == {"released": True}
    assert run.result(timeout=10) == "e-1:bo:False"


# -- security -----------------------------------------------------------------------------
def test_read_only_renders_no_action_and_refuses_posts(fk: flowkit.App) -> None:
    run = waiting_run(fk)
    c = _client(fk, read_only=True)
    page = c.get(f"/runs/{run.id}").text
    assert "read-only" in page
    for form in ('id="cancel"', 'id="signal"', 'id="retry"', "bulk-retry"):
        assert form not in page
    assert c.post(f"/runs/{run.id}/cancel", data={"csrf": "x"}).status_code == 403
    assert c.post(f"/api/runs/{run.id}/cancel", json={}, headers=bearer()).status_code == 403
    assert run.status() is RunStatus.WAITING


def test_mutating_without_the_token_changes_nothing(fk: flowkit.App, client: TestClient) -> None:
    run = waiting_run(fk)
    r = client.post(f"/api/runs/{run.id}/cancel", json={})
    assert r.status_code == 401 and "error" in r.json()
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    assert client.post(f"/api/runs/{run.id}/cancel", json={}, headers=wrong).status_code == 401
    page = client.get(f"/runs/{run.id}").text
    assert 'id="cancel"' not in page and "log in to act" in page
    form = client.post(f"/runs/{run.id}/cancel", data={"csrf": "x"}, follow_redirects=False)
    assert form.status_code == 303 and form.headers["location"].startswith("/login")
    bad_login = client.post(
        "/login", data={"token": "nope", "csrf": csrf_of(client.get("/login").text)}
    )
    assert bad_login.status_code == 401 and 'class="error-message"' in bad_login.text
    assert run.status() is RunStatus.WAITING


def test_csrf_is_checked_on_every_form(fk: flowkit.App, client: TestClient) -> None:
    run = waiting_run(fk)
    login(client)
    assert client.post(f"/runs/{run.id}/cancel", data={}).status_code == 403
    assert client.post(f"/runs/{run.id}/cancel", data={"csrf": "forged" * 8}).status_code == 403
    # the API takes JSON only from a browser's cookie, never a cross-site form
    assert client.post(f"/api/runs/{run.id}/cancel", data={"x": "1"}).status_code == 415
    assert run.status() is RunStatus.WAITING


def test_reads_can_need_the_token(fk: flowkit.App) -> None:
    c = _client(fk, require_token_for_reads=True)
    assert c.get("/runs", follow_redirects=False).headers["location"].startswith("/login")
    assert c.get("/api/runs").status_code == 401
    assert c.get("/api/runs", headers=bearer()).status_code == 200
    assert c.get("/healthz").status_code == 200
    login(c)
    assert c.get("/runs").status_code == 200


def test_no_auth_acts_with_csrf_only(fk: flowkit.App) -> None:
    run = waiting_run(fk)
    c = _client(fk, token=None)
    page = c.get(f"/runs/{run.id}").text
    assert c.post(f"/runs/{run.id}/cancel", data={}).status_code == 403
    c.post(f"/runs/{run.id}/cancel", data={"csrf": csrf_of(page)})
    assert run.status() is RunStatus.CANCELLED


def test_a_script_in_a_key_shows_as_text(fk: flowkit.App, client: TestClient) -> None:
    key = "<script>alert(1)</script>"
    run = fk.submit("echo", {"ref": "<img src=x onerror=alert(2)>", "amount": 1}, key=key)
    run.result(timeout=10)
    for page in (client.get("/runs").text, client.get(f"/runs/{run.id}").text):
        assert "<script>alert(1)" not in page and "onerror=alert(2)>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_secrets_never_shown(fk: flowkit.App, client: TestClient) -> None:
    run = fk.submit("cards", {"owner": "ana", "number": SECRET})
    run.result(timeout=10)
    page = client.get(f"/runs/{run.id}").text
    api = client.get(f"/api/runs/{run.id}").text
    for text in (page, api):
        assert SECRET not in text
        assert "**********" in text
    assert SECRET not in client.get("/api/runs").text


# -- the API -------------------------------------------------------------------------------
def test_api_submit_read_and_errors(fk: flowkit.App, client: TestClient) -> None:
    r = client.post(
        "/api/flows/echo/runs",
        json={"input": {"ref": "a", "amount": 2}, "key": "x"},
        headers=bearer(),
    )
    assert r.status_code == 201 and r.json()["created"] is True
    run_id = r.json()["id"]
    again = client.post(
        "/api/flows/echo/runs",
        json={"input": {"ref": "a", "amount": 2}, "key": "x"},
        headers=bearer(),
    )
    assert again.status_code == 200 and again.json()["id"] == run_id
    bad = client.post("/api/flows/echo/runs", json={"input": {"ref": "a"}}, headers=bearer())
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["errors"]] == [["amount"]]
    assert len(fk.runs(flow="echo")) == 1  # nothing enqueued
    fk.run(run_id).result(timeout=10)
    doc = client.get(f"/api/runs/{run_id}").json()
    assert doc["status"] == "succeeded" and doc["output"] == {"ref": "a", "amount": 2}
    assert [s["name"] for s in doc["steps"]] == ["passthrough"]
    missing = client.get("/api/runs/nope")
    assert missing.status_code == 404 and missing.json() == {"error": "no run 'nope'"}
    assert client.get("/runs/nope").status_code == 404
    unknown = client.post("/api/flows/nope/runs", json={"input": {}}, headers=bearer())
    assert unknown.status_code == 404
    not_json = client.post(
        "/api/flows/echo/runs",
        content=b"{oops",
        headers={**bearer(), "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400 and "Traceback" not in not_json.text
    assert client.get("/api/nothing-here").json() == {"error": "not found"}


def test_api_emit(fk: flowkit.App, client: TestClient) -> None:
    r = client.post(
        "/api/events/expense:submitted",
        json={"payload": {"ref": "ev", "amount": 1}, "key": "ev-1"},
        headers=bearer(),
    )
    assert r.status_code == 201 and [x["flow"] for x in r.json()["runs"]] == ["approvals"]
    assert (
        client.post("/api/events/nobody", json={"payload": {}}, headers=bearer()).status_code == 404
    )


# -- the other pages -------------------------------------------------------------------------
def test_flows_queues_workers_and_dead_pages(fk: flowkit.App, client: TestClient) -> None:
    flows = client.get("/flows").text
    assert 'data-flow="fan"' in flows and "*/5 * * * *" in flows and flows.count("<svg") == 5
    assert "fanout-node" in flows
    assert client.get("/api/flows").json()["flows"][1]["next_ticks"]
    queues = client.get("/queues").text
    assert "not available" in queues and 'data-queue="default"' in queues
    assert client.get("/workers").status_code == 200
    assert "workers" in client.get("/api/workers").json()

    letter = fk.store.dead_letters.record(
        reason="undecodable: amqp://user:hunter2secret@rabbit/ said no",
        body='{"password": "hunter2secret", "x": 1}',
        queue="default",
    )
    dead = client.get("/dead").text
    assert f'data-dead-id="{letter}"' in dead and "hunter2secret" not in dead
    login(client)
    dead = client.get("/dead").text
    assert 'id="dead-retry"' in dead
    r = client.post("/dead/purge", data={"csrf": csrf_of(dead), "id": letter})
    assert r.status_code == 200 and fk.store.dead_letters.get(letter) is None


def test_bulk_cancel_counts_first_then_confirms(fk: flowkit.App, client: TestClient) -> None:
    runs = [waiting_run(fk, f"b{i}") for i in range(3)]
    login(client)
    dry = client.get("/runs/bulk", params={"action": "cancel", "status": "waiting"}).text
    assert 'data-count="3"' in dry and 'form id="bulk"' in dry
    assert all(r.status() is RunStatus.WAITING for r in runs)
    done = client.post(
        "/runs/bulk", data={"csrf": csrf_of(dry), "action": "cancel", "status": "waiting"}
    ).text
    assert 'data-done="3"' in done
    assert all(r.status() is RunStatus.CANCELLED for r in runs)


def test_a_missing_schema_is_an_error_page_not_created(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    bare = flowkit.App("bare", database_url=f"sqlite:///{db}", embedded_worker=False)
    try:
        c = TestClient(create_app(bare, token=TOKEN))
        r = c.get("/runs")
        assert r.status_code == 503 and "flowkit db upgrade" in r.text
        assert c.get("/api/runs").status_code == 503
        import sqlite3

        with sqlite3.connect(db) as conn:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        assert tables == []
    finally:
        bare.close()


# -- the command ---------------------------------------------------------------------------
def test_command_without_the_extra_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowkit.cli import commands_dashboard, exits
    from flowkit.cli.main import main

    monkeypatch.setattr(commands_dashboard, "_missing_extra", lambda: ["starlette"])
    assert main(["dashboard"]) == exits.USAGE
    err = capsys.readouterr().err
    assert "pip install '.[dashboard]'" in err and "Traceback" not in err


def test_command_refuses_a_public_bind_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowkit.cli import exits
    from flowkit.cli.main import main

    monkeypatch.delenv("FLOWKIT_DASHBOARD_TOKEN", raising=False)
    assert main(["dashboard", "--host", "0.0.0.0"]) == exits.USAGE
    assert "needs a token" in capsys.readouterr().err
    assert main(["dashboard", "--host", "0.0.0.0", "--no-auth"]) == exits.USAGE


def test_without_definitions_runs_still_show(fk: flowkit.App, tmp_path: Path) -> None:
    run = fk.submit("fan", 3)
    run.result(timeout=10)
    bare = flowkit.App("bare", database_url=fk.settings.database_url, embedded_worker=False)
    try:
        c = TestClient(create_app(bare, token=TOKEN))
        page = c.get(f"/runs/{run.id}").text
        assert 'id="dag"' in page and "work \u00d73" in page and 'id="no-definitions"' in page
        assert "needs the flow definitions" in c.get("/flows").text
        assert "needs the flow definitions" in c.get("/queues").text
        assert c.get("/workers").status_code == 200 and c.get("/dead").status_code == 200
        login(c)
        assert "retrying this needs the flow definitions" in c.get(f"/runs/{run.id}").text
    finally:
        bare.close()


def test_workers_page_lists_the_embedded_worker(fk: flowkit.App, client: TestClient) -> None:
    fk.submit("echo", {"ref": "w", "amount": 1}).result(timeout=10)
    workers = client.get("/api/workers").json()["workers"]
    assert workers and workers[0]["alive"] is True
    page = client.get("/workers").text
    assert f'data-worker-id="{workers[0]["id"]}" data-alive="true"' in page


# -- attempts, signals, limits in use, a gone worker's steps ------------------------------
_tries: dict[str, int] = {}


class Job(BaseModel):
    tenant: str


@flowkit.stage(retries=2, min_backoff="10ms", max_backoff="10ms")
def shaky(o: Order) -> Order:
    _tries[o.ref] = _tries.get(o.ref, 0) + 1
    if _tries[o.ref] == 1:
        raise ValueError("the first try of <i>shaky</i> fails")
    return o


@flowkit.stage(queue="capped", concurrency=2, concurrency_key=lambda j: j.tenant, rate_limit="5/m")
def capped(j: Job) -> Job:
    return j


retrying = flowkit.Pipeline("retrying", [shaky])
limited = flowkit.Pipeline("limited", [capped])
extra = flowkit.App("dashboard-extra", flows=[retrying, limited])


@pytest.fixture
def fx(tmp_path: Path) -> Iterator[flowkit.App]:
    with embedded(extra, tmp_path, threads=2) as a:
        a.store  # noqa: B018
        yield a


def test_every_attempt_is_on_the_timeline(fx: flowkit.App) -> None:
    run = fx.submit("retrying", {"ref": "t-1", "amount": 1})
    run.result(timeout=10)
    c = _client(fx)
    (step,) = c.get(f"/api/runs/{run.id}").json()["steps"]
    assert step["attempts"] == 2
    first, last = step["attempt_log"]
    assert (first["attempt"], first["outcome"], first["current"]) == (1, "retried", False)
    assert first["error"]["type"] == "ValueError" and first["worker_id"] and first["started_at"]
    assert (last["attempt"], last["outcome"], last["current"]) == (2, "succeeded", True)
    page = c.get(f"/runs/{run.id}").text
    row = f'data-step-id="{step["id"]}" data-attempt="1" data-outcome="retried"'
    assert row in page and "attempt 1" in page
    assert "&lt;i&gt;shaky&lt;/i&gt;" in page and "<i>shaky" not in page


def test_a_failed_run_lists_its_final_attempt_once(fk: flowkit.App, client: TestClient) -> None:
    _flaky.set()
    run = fk.submit("flaky", {"ref": "f-1", "amount": 1})
    wait_for_status(run, RunStatus.FAILED, timeout=10)
    steps = client.get(f"/api/runs/{run.id}").json()["steps"]
    second = next(s for s in steps if s["name"] == "second")
    (only,) = second["attempt_log"]
    assert (only["outcome"], only["current"]) == ("failed", True)
    assert 'class="attempt"' not in client.get(f"/runs/{run.id}").text


def test_signals_awaited_and_received(fk: flowkit.App, client: TestClient) -> None:
    run = waiting_run(fk, "s-1")
    doc = client.get(f"/api/runs/{run.id}").json()
    (awaited,) = doc["signals_awaited"]
    assert (awaited["signal"], awaited["step"], awaited["waiting"]) == ("approval", "decide", True)
    assert awaited["deadline"] is None  # no timeout on this wait
    assert doc["signals_received"] == []
    page = client.get(f"/runs/{run.id}").text
    assert 'id="signals-awaited"' in page and 'data-signal="approval"' in page
    fk.store.control.deliver_signal(run.id, "note", {"password": SECRET, "n": 1}, None)
    received = client.get(f"/api/runs/{run.id}").json()["signals_received"]
    assert [r["name"] for r in received] == ["note"] and received[0]["received_at"]
    assert received[0]["payload"]["n"] == 1 and SECRET not in str(received)
    r = client.post(
        f"/api/runs/{run.id}/signals/approval",
        json={"data": {"approver": "ann", "ok": True}},
        headers=bearer(),
    )
    assert r.status_code == 200
    run.result(timeout=10)
    doc = client.get(f"/api/runs/{run.id}").json()
    assert doc["signals_awaited"] == []
    assert [r["name"] for r in doc["signals_received"]] == ["note", "approval"]
    assert doc["signals_received"][1]["payload"] == {"approver": "ann", "ok": True}
    page = client.get(f"/runs/{run.id}").text
    assert 'id="signals-received"' in page and SECRET not in page


def test_a_signal_deadline_is_the_waiting_rows_due_time(fk: flowkit.App) -> None:
    from flowkit.dashboard import views
    from flowkit.store import SignalWait

    run = waiting_run(fk, "s-2")
    info, steps = fk.store.get_run(run.id), fk.store.get_steps(run.id)
    assert info is not None
    decide = next(s for s in steps if s.name == "decide")
    due = info.created_at + timedelta(minutes=5)
    waits = [SignalWait(decide.id, "decide", 1, due)]
    (awaited,) = views.signals_awaited(fk.flow("approvals").compile(), info, steps, waits, [])
    assert awaited["deadline"] == due.isoformat() and awaited["step_id"] == decide.id


def test_queues_show_how_much_of_each_limit_is_in_use(fx: flowkit.App) -> None:
    from flowkit._ids import new_id
    from flowkit.store import ClaimLimits, NewStep

    store = fx.store
    for tenant in ("acme", "acme", "beta"):
        step = NewStep(id=new_id(), name="capped", queue="capped", input={"tenant": tenant})
        store.runs.create(run_id=new_id(), flow="limited", key=None, input={}, first=[step])
        lim = ClaimLimits(
            queue="capped",
            key=f"limited.capped:{tenant}",
            key_concurrency=2,
            rates=(("limited.capped", 5, 60_000),),
        )
        assert store.runs.claim(step.id, new_id(), lease_ms=60_000, starts_run=True, limits=lim)
    c = _client(fx)
    (row,) = [q for q in c.get("/api/queues").json()["queues"] if q["name"] == "capped"]
    conc, rate = row["in_use"]
    assert conc == {
        "step": "limited.capped",
        "limit": "concurrency 2 per key",
        "in_use": 3,
        "by_key": {"limited.capped:acme": 2, "limited.capped:beta": 1},
    }
    assert (rate["limit"], rate["in_use"], rate["by_key"]) == ("rate 5/60s", 3, None)
    page = c.get("/queues").text
    assert 'data-in-use="3"' in page and 'data-key="limited.capped:acme"' in page


def test_a_gone_workers_steps_show_when_they_resume(fk: flowkit.App, client: TestClient) -> None:
    from flowkit._ids import new_id
    from flowkit.store import NewStep

    store = fk.store
    wid = store.workers.register(host="h", pid=1, queues=None, threads=1, version="0")
    step = NewStep(
        id=new_id(), name="passthrough", queue="default", input={"ref": "g", "amount": 1}
    )
    store.runs.create(run_id=new_id(), flow="echo", key=None, input={}, first=[step])
    store.runs.claim(step.id, "m-gone", lease_ms=600_000, starts_run=True, worker_id=wid)
    store.workers.stopped(wid)
    (gone,) = [w for w in client.get("/api/workers").json()["workers"] if w["id"] == wid]
    (held,) = gone["running"]
    assert held["resumes_after"] == held["lease_until"] is not None
    clock = (
        datetime.fromisoformat(held["lease_until"]).astimezone(timezone.utc).strftime("%H:%M:%S")
    )
    page = client.get("/workers").text
    assert f"resumed after {clock} (its lease)" in page
