"""Security on the embedded default: JSON-only messages, signing, limits, secrets kept out of
logs, stored errors and the CLI's output.

The CLI tests load this file as their MODULE:ATTR, as users load theirs.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker
from dramatiq.encoder import PickleEncoder
from dramatiq.errors import DecodeError
from pydantic import BaseModel, SecretStr, TypeAdapter

import flowkit
from flowkit.config import Settings, mask_url
from flowkit.redact import RedactingFilter, protect, redact, remember, remember_environment
from flowkit.runtime.brokers import create_broker
from flowkit.runtime.quarantine import RecordingEncoder
from flowkit.runtime.wire import WirePolicy
from flowkit.store.db import create_engine
from flowkit.testing import embedded

HERE = Path(__file__)
KEY = "sec-test-key-0123456789abcdef"
OLD_KEY = "old-test-key-0123456789abcdef"
OTHER_KEY = "not-our-key-0123456789abcdef"


class Login(BaseModel):
    user: str
    token: SecretStr


class Session(BaseModel):
    user: str
    token: SecretStr


class Receipt(BaseModel):
    user: str
    api_token: SecretStr
    pin: SecretStr


seen: list[str] = []


@flowkit.stage(queue="sec.open", retries=0)
def open_session(login: Login) -> Session:
    secret = login.token.get_secret_value()
    if login.user == "leaky":
        raise ValueError(f"upstream refused token {secret}")
    if login.user == "invalid":
        TypeAdapter(int).validate_python(secret)  # its error text repeats the value
    return Session(user=login.user, token=login.token)


@flowkit.stage(queue="sec.use")
def use_session(s: Session) -> Receipt:
    seen.append(s.token.get_secret_value())
    return Receipt(user=s.user, api_token=s.token, pin=s.token)


vault = flowkit.Pipeline("sec-vault", [open_session, use_session])
docs = flowkit.Workflow("sec-docs", on="sec:doc")


@docs.step(queue="sec.docs")
def echo(doc: dict[str, Any]) -> int:
    return len(doc)


gate = flowkit.Workflow("sec-gate")


@gate.step(wait_for="note")
def wait_note(n: int, note: dict[str, Any]) -> int:
    return n + len(note)


app = flowkit.App("sec", flows=[vault, docs, gate])


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    """Dramatiq's encoder is process-wide: leave it as this test found it."""
    before = dramatiq.get_encoder()
    saved = (getattr(before, "policy", None), getattr(before, "recorder", None))
    seen.clear()
    yield
    dramatiq.set_encoder(before)
    if isinstance(before, RecordingEncoder):
        before.policy, before.recorder = saved  # type: ignore[assignment]


@pytest.fixture
def sec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[flowkit.App]:
    for name in ("FLOWKIT_SIGNING_KEY", "FLOWKIT_MAX_PAYLOAD_BYTES", "FLOWKIT_MAX_PAYLOAD_DEPTH"):
        monkeypatch.delenv(name, raising=False)
    with embedded(app, tmp_path) as a:
        yield a


def stub(broker: dramatiq.Broker) -> StubBroker:
    assert isinstance(broker, StubBroker)
    return broker


def recording_encoder(policy: WirePolicy) -> tuple[RecordingEncoder, list[dict[str, Any]]]:
    """flowkit's encoder as the process's, recording what it dead-letters."""
    encoder = RecordingEncoder()
    encoder.policy = policy
    letters: list[dict[str, Any]] = []
    encoder.recorder = lambda **kw: letters.append(kw)
    dramatiq.set_encoder(encoder)
    return encoder, letters


def message_fields(**changes: Any) -> dict[str, Any]:
    return {
        "queue_name": "sec.docs",
        "actor_name": "sec-docs.echo",
        "args": [],
        "kwargs": {"step_id": "s", "run_id": "r", "key": None},
        "options": {},
        "message_id": "m-1",
        "message_timestamp": 0,
        **changes,
    }


# -- messages are JSON only; stages are found by their registered name --------------------


class _Trap:
    """Unpickling it would create a directory: the proof that nothing was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_body_is_dead_lettered_and_never_unpickled(tmp_path: Path, protocol: int) -> None:
    trap = tmp_path / "unpickled"
    body = pickle.dumps(message_fields(args=[_Trap(trap)]), protocol=protocol)
    _, letters = recording_encoder(WirePolicy())
    with pytest.raises(DecodeError):
        dramatiq.Message.decode(body)
    assert not trap.exists()
    kind = "not JSON" if protocol == 0 else "not UTF-8"  # protocol 0 is ASCII
    assert [d["reason"] for d in letters] == [f"undecodable message: {kind}"]


def test_flowkit_replaces_a_pickle_encoder(sec: flowkit.App) -> None:
    dramatiq.set_encoder(PickleEncoder())
    sec.broker  # noqa: B018 - opening the broker installs flowkit's encoder
    assert type(dramatiq.get_encoder()) is RecordingEncoder


@pytest.mark.parametrize("actor", ["builtins.eval", "os.mkdir", "echo", "sec-docs.echo.__init__"])
def test_a_message_naming_an_unknown_actor_is_dead_lettered_not_run(
    sec: flowkit.App, tmp_path: Path, actor: str
) -> None:
    trap = tmp_path / "evaluated"
    sec.start_worker()
    code = f"__import__('os').mkdir({str(trap)!r})"
    sec.broker.enqueue(
        dramatiq.Message(
            queue_name="sec.docs", actor_name=actor, args=(code,), kwargs={}, options={}
        )
    )
    stub(sec.broker).join("sec.docs", timeout=10_000, fail_fast=False)
    assert not trap.exists()
    (letter,) = sec.store.dead_letters.newest()
    assert letter.reason == f"unknown stage: no actor named {actor!r}"
    assert letter.actor == actor


# -- signing -----------------------------------------------------------------------------


def test_signatures_verify_with_every_accepted_key_and_sign_with_the_first() -> None:
    body = json.dumps(message_fields()).encode()
    new, old = WirePolicy.build([KEY, OLD_KEY]), WirePolicy.build([OLD_KEY])
    sealed = new.seal(body)
    assert sealed.startswith(b"fk1:") and sealed.endswith(body)
    assert new.open(sealed) == body
    assert new.open(old.seal(body)) == body  # a message sent before the rotation
    assert WirePolicy().open(sealed) == body  # verification is opt-in
    assert WirePolicy().seal(body) == body  # no key: plain JSON


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps(message_fields()).encode(), "signature missing"),
        (WirePolicy.build([OTHER_KEY]).seal(b"{}"), "signature does not match any accepted key"),
        # Not JSON after a wrong signature: refused for the signature, never decoded.
        (WirePolicy.build([OTHER_KEY]).seal(b"\x80\x04 not json"), "does not match"),
        (WirePolicy.build([KEY]).seal(b"{}")[:-2] + b"[]", "does not match"),  # tampered
        (b"fk1:abc:{}", "signature malformed"),
    ],
)
def test_a_worker_with_a_key_dead_letters_unsigned_and_forged_messages(
    body: bytes, reason: str
) -> None:
    _, letters = recording_encoder(WirePolicy.build([KEY, OLD_KEY]))
    with pytest.raises(DecodeError) as info:
        dramatiq.Message.decode(body)
    assert reason in str(info.value.args[2])
    (letter,) = letters
    assert letter["reason"].startswith("rejected message: ") and reason in letter["reason"]


def test_a_signed_app_signs_every_message_and_its_runs_succeed(
    sec: flowkit.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWKIT_SIGNING_KEY", f"{KEY}, {OLD_KEY}")
    sec.configure(embedded_worker=False, threads=4)  # settings are read again
    assert sec.settings.signing_keys == (KEY, OLD_KEY)
    run = docs.submit({"a": 1, "b": 2})
    (body,) = list(stub(sec.broker).queues["sec.docs"].queue)
    assert body.startswith(b"fk1:")
    assert WirePolicy.build([KEY]).open(body)  # signed with the first key
    sec.start_worker()
    assert run.result(timeout=30) == 2


def test_signing_keys_come_from_app_arguments_and_are_never_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLOWKIT_SIGNING_KEY", raising=False)
    s = flowkit.App(
        "sec-args",
        broker_url="amqp://user:brokerpass@mq:5672/",
        database_url="postgresql://u:dbpass@db/x",
        signing_key=[KEY, OLD_KEY],
        max_payload_bytes=1000,
        max_payload_depth=5,
    ).settings
    assert (s.signing_keys, s.max_payload_bytes, s.max_payload_depth) == ((KEY, OLD_KEY), 1000, 5)
    for text in (repr(s), str(s)):
        assert KEY not in text and OLD_KEY not in text
        assert "brokerpass" not in text and "dbpass" not in text
        assert "<2 hidden>" in text
    with pytest.raises(flowkit.ConfigurationError) as info:
        Settings.resolve(signing_key="short-key")
    assert "short-key" not in str(info.value)
    monkeypatch.setenv("FLOWKIT_MAX_PAYLOAD_DEPTH", "1000")
    with pytest.raises(flowkit.ConfigurationError, match="at most 200"):
        Settings.resolve()


# -- limits on size and depth --------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_list(depth: int) -> list[Any]:
    top: list[Any] = []
    node = top
    for _ in range(depth - 1):
        node.append([])
        node = node[0]
    return top


def assert_nothing_stored_or_sent(a: flowkit.App) -> None:
    assert a.runs() == []
    assert all(q.qsize() == 0 for q in stub(a.broker).queues.values())


@pytest.mark.parametrize(
    ("payload", "limit"),
    [
        ({"blob": "x" * 5000}, "bytes"),
        ({"blob": "é" * 600}, "bytes"),  # 1,200 bytes of UTF-8 in 600 characters
        (nested(40), "depth"),
        ({"a": deep_list(100_000)}, "depth"),  # deeper than Python's recursion limit
    ],
    ids=["size", "utf8-size", "depth", "very-deep"],
)
def test_submit_and_emit_refuse_payloads_over_the_limits(
    sec: flowkit.App, monkeypatch: pytest.MonkeyPatch, payload: Any, limit: str
) -> None:
    monkeypatch.setenv("FLOWKIT_MAX_PAYLOAD_BYTES", "1000")
    sec.configure(embedded_worker=False, threads=4)
    with pytest.raises(flowkit.PayloadTooLarge) as info:
        docs.submit(payload)
    assert isinstance(info.value, flowkit.InputValidationError)
    assert info.value.limit == limit
    assert ("FLOWKIT_MAX_PAYLOAD_BYTES" if limit == "bytes" else "32 levels") in str(info.value)
    with pytest.raises(flowkit.PayloadTooLarge):
        sec.emit("sec:doc", payload)
    assert_nothing_stored_or_sent(sec)
    assert docs.submit(nested(30)).created  # within the limits: accepted


def test_a_signal_over_the_limits_is_refused_and_not_kept(
    sec: flowkit.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWKIT_MAX_PAYLOAD_BYTES", "1000")
    sec.configure(embedded_worker=False, threads=4)
    run = gate.submit(1)
    for note in ({"blob": "x" * 5000}, nested(40), {"a": deep_list(100_000)}):
        with pytest.raises(flowkit.PayloadTooLarge):
            run.signal("note", note)
    # None of them was kept: this one is the first (a second would be refused).
    assert run.signal("note", {"ok": True}) is True
    sec.start_worker()
    assert run.result(timeout=30) == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps(message_fields(kwargs={"x": "y" * 70_000})).encode(), "too large: "),
        (json.dumps(message_fields(options=nested(20))).encode(), "nested more than 8 levels"),
        (b"[" * 100_000 + b"]" * 100_000, "too large"),
        (
            json.dumps(message_fields()).encode()[:-1]
            + b',"x":'
            + b"[" * 5000
            + b"]" * 5000
            + b"}",
            "nested too deeply to decode",
        ),
    ],
    ids=["size", "depth", "huge-deep", "deeper-than-the-decoder"],
)
def test_a_worker_dead_letters_messages_over_the_limits(body: bytes, reason: str) -> None:
    # Messages get floors of 64 KiB and 8 levels, whatever smaller payload limits say.
    settings = Settings.resolve(max_payload_bytes=1000, max_payload_depth=2)
    _, letters = recording_encoder(WirePolicy.of(settings))
    with pytest.raises(DecodeError):
        dramatiq.Message.decode(body)
    (letter,) = letters
    assert letter["reason"].startswith("rejected message: ") and reason in letter["reason"]


# -- secrets ---------------------------------------------------------------------------------


def test_a_secret_field_reaches_the_next_step_and_stays_out_of_reprs(sec: flowkit.App) -> None:
    run = vault.submit({"user": "ana", "token": "tok-ana-1234567"})
    receipt = run.result(timeout=30)
    assert receipt.api_token.get_secret_value() == "tok-ana-1234567"
    assert seen == ["tok-ana-1234567"]  # not "**********"
    steps = {s.name: s for s in run.steps()}
    assert steps["use_session"].input["token"] == "tok-ana-1234567"  # the database keeps it
    assert "tok-ana" not in repr(run.info()) + repr(list(steps.values()))


def test_stored_errors_and_log_lines_never_hold_a_secret(
    sec: flowkit.App, caplog: pytest.LogCaptureFixture
) -> None:
    protect(caplog.handler)  # as the CLI does with its handlers
    with caplog.at_level(logging.INFO):
        leaky = vault.submit({"user": "leaky", "token": "tok-leaky-1234567"})
        invalid = vault.submit({"user": "invalid", "token": "tok-invalid-1234567"})
        for run in (leaky, invalid):
            with pytest.raises(flowkit.RunFailed):
                run.result(timeout=30)
    (leaky_error,) = [s.error for s in leaky.steps() if s.error]
    assert leaky_error["message"] == "upstream refused token ***"
    assert "tok-leaky" not in leaky_error["traceback"]
    (invalid_error,) = [s.error for s in invalid.steps() if s.error]
    assert invalid_error["message"].startswith("1 validation error(s): (root): ")
    assert "input_value=<hidden>" in invalid_error["traceback"]
    assert "tok-invalid" not in json.dumps(invalid_error)
    logged = caplog.text
    assert "failed in step open_session" in logged
    assert "tok-leaky" not in logged and "tok-invalid" not in logged


def test_known_secrets_and_url_passwords_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-123456")
    monkeypatch.setenv("FLOWKIT_BROKER_URL", "amqp://guest:envpass-1234@mq/")
    remember_environment()
    remember(KEY)
    text = redact(
        f"key sk-test-openai-123456 signing {KEY} env envpass-1234 "
        "url amqp://bob:s3cret-pw@host:5672/ dsn postgresql://u@h/db?password=pw-in-query&x=1 "
        "[type=int_parsing, input_value='a payload', input_type=str]"
    )
    for leaked in ("sk-test-openai", KEY, "envpass", "s3cret-pw", "pw-in-query", "a payload"):
        assert leaked not in text
    assert "amqp://bob:***@host:5672/" in text
    assert (
        mask_url("postgresql://u@h/db?password=pw-in-query") == "postgresql://u@h/db?password=***"
    )


def test_the_log_filter_masks_messages_arguments_and_tracebacks() -> None:
    remember(KEY)
    try:
        raise RuntimeError(f"failed with {KEY}")
    except RuntimeError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "using %s at %s", (KEY, "amqp://a:pw123@h/"), None
        )
        record.exc_info = __import__("sys").exc_info()
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert KEY not in text and "pw123" not in text
    assert "using *** at amqp://a:***@h/" in text


def test_dramatiq_logs_name_a_failing_message_by_actor_and_id_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = create_broker("memory://")
    failed: list[str] = []

    def boom(**payload: Any) -> None:
        failed.append(payload["card"])
        raise RuntimeError("boom")

    actor = dramatiq.Actor(
        boom, broker=broker, actor_name="sec.boom", queue_name="sec.logs", priority=0, options={}
    )
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="dramatiq"):
            message = actor.send(card="4111-1111-secret-card")
            stub(broker).join("sec.logs", timeout=10_000, fail_fast=False)
    finally:
        worker.stop()
    assert failed == ["4111-1111-secret-card"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("Failed to process message" in r.getMessage() for r in errors)
    assert f"sec.boom [{message.message_id}]" in caplog.text
    assert "secret-card" not in caplog.text
    assert all("secret-card" not in r.getMessage() for r in caplog.records)


def test_failing_statements_do_not_print_their_parameters(database_url: str) -> None:
    statement = sa.text("INSERT INTO no_such_table (v) VALUES (:v)")
    engine = create_engine(database_url, pool_size=1)
    try:
        with pytest.raises(sa.exc.DBAPIError) as info, engine.begin() as conn:
            conn.execute(statement, {"v": "bound-secret-value"})
    finally:
        engine.dispose()
    assert "hide_parameters" in str(info.value)
    assert "bound-secret-value" not in str(info.value)


# -- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "FLOWKIT_BROKER_URL": "memory://",
        "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "FLOWKIT_DEBUG": "",
        "FLOWKIT_MAX_PAYLOAD_BYTES": "1000",
        "FLOWKIT_APP": "",
        "FLOWKIT_SIGNING_KEY": "",
    }


@pytest.mark.parametrize(
    "data",
    ['{"blob": "' + "x" * 2000 + '"}', '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"],
    ids=["size", "depth"],
)
def test_cli_submit_over_a_limit_is_one_line_and_exit_4(
    cli: Any, env: dict[str, str], tmp_path: Path, data: str
) -> None:
    path = tmp_path / "data.json"
    path.write_text(data)
    result = cli("submit", f"{HERE}:docs", "--data", f"@{path}", env=env)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowkit: error: "), result.stderr
    assert "FLOWKIT_MAX_PAYLOAD" in lines[0] and "nothing was" in lines[0]
    assert result.stdout == ""


def test_cli_runs_show_masks_secret_fields(
    cli: Any, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWKIT_SIGNING_KEY", raising=False)
    with embedded(app, tmp_path) as a:
        run = vault.submit({"user": "bo", "token": "tok-bo-1234567"})
        run.result(timeout=30)
        db = a.settings.database_url
    env = {**env, "FLOWKIT_DATABASE_URL": db}
    by_model = cli("runs", "show", run.id, "--json", "--app", f"{HERE}:app", env=env)
    assert by_model.returncode == 0, by_model.stderr
    output = json.loads(by_model.stdout)["output"]
    assert output == {"user": "bo", "api_token": "**********", "pin": "**********"}
    by_name = cli("runs", "show", run.id, "--json", env=env)
    assert by_name.returncode == 0, by_name.stderr
    output = json.loads(by_name.stdout)["output"]
    # Without the models, only a field named like a secret can be recognised.
    assert output == {"user": "bo", "api_token": "**********", "pin": "tok-bo-1234567"}
    listed = cli("runs", "list", "--json", "--app", f"{HERE}:app", env=env)
    assert "tok-bo" not in listed.stdout


def test_cli_errors_mask_url_passwords(cli: Any, env: dict[str, str]) -> None:
    url = "postgresql://flowkit:hunter2-db-pass@127.0.0.1:1/nowhere"
    result = cli("runs", "list", "--database-url", url, env=env)
    assert result.returncode == 6, result.stderr
    assert "hunter2-db-pass" not in result.stderr + result.stdout
