"""flowkit.llm against a real local server speaking the OpenAI API (never a patched client)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai_server import API_KEY, FakeOpenAI, Reply, openai_server  # noqa: F401 - fixture
from pydantic import BaseModel

import flowkit
from flowkit import llm
from flowkit.llm._transport import retry_after
from flowkit.testing import embedded, run_to_completion

ROOT = Path(__file__).resolve().parents[2]


class Criteria(BaseModel):
    min_credit_score: int
    industries: list[str]


class Ask(BaseModel):
    text: str
    reasks: int = 2
    cache: bool = True


SYSTEM = "You read lending policies."


@flowkit.stage(retries=2, min_backoff="1ms", max_backoff="5ms")
def extract(ask: Ask, ctx: flowkit.Context) -> Criteria:
    return llm.structured(
        Criteria,
        f"Extract the criteria from: {ask.text}",
        ctx=ctx,
        system=SYSTEM,
        reasks=ask.reasks,
        cache=ask.cache,
    )


@flowkit.stage(retries=2, min_backoff="1ms", max_backoff="5ms")
def summarize(c: Criteria, ctx: flowkit.Context) -> str:
    return llm.complete(f"One line about: {c.model_dump_json()}", ctx=ctx, model="cheap-model")


extraction = flowkit.Pipeline("llm-extract", [extract])


@flowkit.stage(name="extract", retries=2, min_backoff="1ms", max_backoff="5ms")
def extract_again(ask: Ask, ctx: flowkit.Context) -> Criteria:
    return llm.structured(Criteria, ask.text, ctx=ctx, cache=ask.cache)


briefing = flowkit.Pipeline("llm-brief", [extract_again, summarize])
app = flowkit.App(
    "llm",
    flows=[extraction, briefing],
    llm_model="test-model",
    llm_prices={"test-model": (1.0, 2.0), "cheap-model": (0.5, 0.5)},
)
GOOD = json.dumps({"min_credit_score": 680, "industries": ["retail"]})
EXPECTED = Criteria(min_credit_score=680, industries=["retail"])


@pytest.fixture
def llm_app(tmp_path: Path, openai_server: FakeOpenAI) -> Iterator[flowkit.App]:  # noqa: F811
    with embedded(app, tmp_path) as a:
        yield a


def _secret_free(*texts: str | None) -> bool:
    return all(API_KEY not in (t or "") for t in texts)


# -- what is sent and what comes back -------------------------------------------------
def test_structured_output_is_parsed_and_the_request_is_complete(
    llm_app: flowkit.App,
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    openai_server.script = [GOOD]
    run = extraction.submit(Ask(text="credit 680+, retail only"))
    assert run_to_completion(run, timeout=10) == EXPECTED
    (req,) = openai_server.requests
    assert req["model"] == "test-model"  # the App's default
    assert req["temperature"] == 0.0
    assert "max_tokens" not in req
    system, user = req["messages"]
    assert system["role"] == "system"
    assert system["content"].startswith(SYSTEM)
    assert json.dumps(Criteria.model_json_schema()) in system["content"]
    assert user == {
        "role": "user",
        "content": "Extract the criteria from: credit 680+, retail only",
    }
    fmt = req["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Criteria"
    assert fmt["json_schema"]["schema"] == Criteria.model_json_schema()
    assert openai_server.headers[0]["authorization"] == f"Bearer {API_KEY}"


def test_tokens_and_cost_are_recorded_on_each_step(
    llm_app: flowkit.App,
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    openai_server.script = [
        Reply(content=GOOD, prompt_tokens=1000, completion_tokens=200),
        Reply(content="Retail, 680+.", prompt_tokens=40, completion_tokens=6),
    ]
    run = briefing.submit(Ask(text="credit 680+, retail only"))
    assert run_to_completion(run, timeout=10) == "Retail, 680+."
    first, second = (s.usage for s in run.steps())
    assert first is not None and second is not None
    assert (first["prompt_tokens"], first["completion_tokens"], first["calls"]) == (1000, 200, 1)
    assert first["cost"] == pytest.approx((1000 * 1.0 + 200 * 2.0) / 1_000_000)
    assert first["models"] == ["test-model"]
    assert (second["prompt_tokens"], second["completion_tokens"]) == (40, 6)
    assert second["cost"] == pytest.approx(46 * 0.5 / 1_000_000)
    assert openai_server.requests[1]["model"] == "cheap-model"
    assert "response_format" not in openai_server.requests[1]


def test_fenced_json_and_a_callers_system_message(openai_server: FakeOpenAI) -> None:  # noqa: F811
    openai_server.script = [f"```json\n{GOOD}\n```"]
    msgs = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "go"}]
    got = llm.structured(Criteria, msgs, model="m", temperature=None, max_tokens=50)
    assert got == EXPECTED
    (req,) = openai_server.requests
    assert [m["role"] for m in req["messages"]] == ["system", "user"]  # merged, not two
    assert req["messages"][0]["content"].startswith("Be terse.\n\nAnswer with one JSON object")
    assert "temperature" not in req
    assert req["max_tokens"] == 50
    assert msgs[0] == {"role": "system", "content": "Be terse."}  # the caller's list is untouched


def test_without_a_context_nothing_is_cached(openai_server: FakeOpenAI) -> None:  # noqa: F811
    openai_server.script = ["hello there", "hello again"]
    assert llm.complete("hi", model="m") == "hello there"
    assert llm.complete("hi", model="m") == "hello again"
    assert openai_server.requests[0]["messages"] == [{"role": "user", "content": "hi"}]


# -- failures -------------------------------------------------------------------------
def test_a_429_is_retried_as_a_step_retry_after_retry_after(
    llm_app: flowkit.App,
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    # The stage's backoff is at most 5ms, so a gap of 0.3s comes from Retry-After.
    openai_server.script = [Reply(429, headers={"Retry-After": "0.3"}), GOOD]
    run = extraction.submit(Ask(text="x"))
    assert run_to_completion(run, timeout=10) == EXPECTED
    assert run.steps()[0].attempts == 2
    assert len(openai_server.requests) == 2
    assert openai_server.times[1] - openai_server.times[0] >= 0.3


def test_a_5xx_is_retried_with_backoff(llm_app: flowkit.App, openai_server: FakeOpenAI) -> None:  # noqa: F811
    openai_server.script = [500, Reply(503, error="overloaded"), GOOD]
    run = extraction.submit(Ask(text="y"))
    assert run_to_completion(run, timeout=10) == EXPECTED
    assert run.steps()[0].attempts == 3


def test_5xx_until_the_retries_run_out_fails_with_llm_unavailable(
    llm_app: flowkit.App,
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    openai_server.script = [500, 502, Reply(503, error="overloaded")]
    run = extraction.submit(Ask(text="down"))
    with pytest.raises(flowkit.RunFailed) as info:
        run.result(timeout=10)
    assert info.value.error_type == "LLMUnavailable"
    assert "HTTP 503: overloaded" in info.value.error_message
    assert run.steps()[0].attempts == 3


def test_another_4xx_fails_at_once_and_the_key_is_not_repeated(
    llm_app: flowkit.App,
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    # A server that echoes the key back must not get it into the run's error.
    openai_server.script = [Reply(401, error=f"Incorrect API key provided: {API_KEY}")]
    run = extraction.submit(Ask(text="v"))
    with pytest.raises(flowkit.RunFailed) as info:
        run.result(timeout=10)
    assert info.value.error_type == "LLMRequestError"
    assert "HTTP 401: Incorrect API key provided" in info.value.error_message
    assert run.steps()[0].attempts == 1
    assert len(openai_server.requests) == 1
    step = run.steps()[0]
    assert _secret_free(info.value.error_message, info.value.traceback, json.dumps(step.error))


def test_an_invalid_answer_is_reasked_within_the_attempt(
    llm_app: flowkit.App,
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    openai_server.script = ["not json at all", GOOD]
    run = extraction.submit(Ask(text="z"))
    assert run_to_completion(run, timeout=10) == EXPECTED
    assert run.steps()[0].attempts == 1
    first, second = openai_server.requests
    assert second["messages"][: len(first["messages"])] == first["messages"]
    answer, reask = second["messages"][-2:]
    assert answer == {"role": "assistant", "content": "not json at all"}
    assert reask["role"] == "user"
    assert "not valid for the Criteria schema" in reask["content"]
    assert "Invalid JSON" in reask["content"]  # pydantic's own error, quoted back
    usage = run.steps()[0].usage
    assert usage is not None
    assert (usage["calls"], usage["prompt_tokens"], usage["completion_tokens"]) == (2, 22, 14)


def test_bounded_reasks_then_a_clear_error_and_no_retries(
    llm_app: flowkit.App,
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    openai_server.script = ["{", json.dumps({"min_credit_score": "high"}), "[]"]
    run = extraction.submit(Ask(text="w", reasks=2))
    with pytest.raises(flowkit.RunFailed) as info:
        run.result(timeout=10)
    assert info.value.error_type == "LLMOutputError"
    message = info.value.error_message
    assert "'test-model'" in message
    assert "schema Criteria in 3 tries (2 re-ask(s))" in message
    assert "Input should be an object" in message  # the last answer's error
    assert run.steps()[0].attempts == 1
    assert len(openai_server.requests) == 3
    assert (
        "min_credit_score: Input should be a valid integer"
        in (openai_server.requests[2]["messages"][-1]["content"])
    )
    assert _secret_free(message, info.value.traceback)
    usage = run.steps()[0].usage  # the failed attempt's tokens are kept
    assert usage is not None and usage["calls"] == 3


def test_no_reasks_means_one_answer(openai_server: FakeOpenAI) -> None:  # noqa: F811
    openai_server.script = ["nope"]
    with pytest.raises(llm.LLMOutputError) as info:
        llm.structured(Criteria, "x", model="m", reasks=0)
    assert isinstance(info.value, flowkit.PermanentError)
    assert (info.value.model, info.value.schema) == ("m", "Criteria")
    assert len(openai_server.requests) == 1


def test_a_server_that_cannot_be_reached_is_unavailable() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import openai

    client = openai.OpenAI(
        api_key="k", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=5
    )
    with pytest.raises(llm.LLMUnavailable, match="could not connect"):
        llm.complete("hi", model="m", client=client)


# -- the cache ------------------------------------------------------------------------
def test_the_cache_answers_the_same_question_once(
    llm_app: flowkit.App,
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    openai_server.script = [GOOD, "Retail, 680+."]
    first = briefing.submit(Ask(text="same question"))
    assert run_to_completion(first, timeout=10) == "Retail, 680+."
    second = briefing.submit(Ask(text="same question"))
    assert run_to_completion(second, timeout=10) == "Retail, 680+."
    assert len(openai_server.requests) == 2  # one per step of the first run only
    for step in second.steps():
        assert step.usage is not None
        assert step.usage["cached_calls"] == 1
        assert "prompt_tokens" not in step.usage and "cost" not in step.usage
    assert all(s.usage and "cached_calls" not in s.usage for s in first.steps())


def test_cache_false_asks_again(llm_app: flowkit.App, openai_server: FakeOpenAI) -> None:  # noqa: F811
    openai_server.script = [GOOD, GOOD]
    for _ in range(2):
        run = extraction.submit(Ask(text="fresh question", cache=False))
        assert run_to_completion(run, timeout=10) == EXPECTED
    assert len(openai_server.requests) == 2


def test_a_different_question_is_not_a_hit(llm_app: flowkit.App, openai_server: FakeOpenAI) -> None:  # noqa: F811
    openai_server.script = [GOOD, GOOD]
    for text in ("question one", "question two"):
        run_to_completion(extraction.submit(Ask(text=text)), timeout=10)
    assert len(openai_server.requests) == 2


# -- configuration --------------------------------------------------------------------
def test_missing_configuration_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("FLOWKIT_LLM_MODEL", raising=False)
    with pytest.raises(flowkit.ConfigurationError, match="set OPENAI_API_KEY"):
        llm.structured(Criteria, "x", model="m")
    with pytest.raises(flowkit.ConfigurationError, match="FLOWKIT_LLM_MODEL"):
        llm.complete("x")


def test_the_model_comes_from_the_environment_last(
    openai_server: FakeOpenAI,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOWKIT_LLM_MODEL", "env-model")
    openai_server.script = ["a", "b"]
    llm.complete("x")
    llm.complete("x", model="given-model")
    assert [r["model"] for r in openai_server.requests] == ["env-model", "given-model"]


def test_a_local_server_needs_no_key(
    openai_server: FakeOpenAI,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    openai_server.script = ["ok"]
    assert llm.complete("x", model="local") == "ok"


def test_without_the_openai_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # what `import openai` does when absent
    with pytest.raises(flowkit.ConfigurationError, match=r"pip install '\.\[llm\]'"):
        llm.complete("x", model="m")


def test_the_module_imports_without_openai() -> None:
    code = (
        "import sys; sys.modules['openai'] = None\n"
        "import flowkit.llm as m\n"
        "assert callable(m.structured) and issubclass(m.LLMError, Exception)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "150", "retry-after": "9"}, 0.15),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past
        ({"retry-after": "86400"}, 600.0),  # capped
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers) == seconds
