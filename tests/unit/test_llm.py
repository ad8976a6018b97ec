"""flowkit.llm against a real local server speaking the OpenAI API (never a patched client)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai_server import FakeOpenAI, openai_server  # noqa: F401 - the fixture
from pydantic import BaseModel

import flowkit
from flowkit import llm
from flowkit.testing import embedded


class Criteria(BaseModel):
    min_credit_score: int
    industries: list[str]


@flowkit.stage(retries=2, min_backoff="1ms", max_backoff="5ms")
def extract(text: str, ctx: flowkit.Context) -> Criteria:
    return llm.structured(Criteria, f"Extract the criteria from: {text}", ctx=ctx)


pipeline = flowkit.Pipeline("llm-extract", [extract])
app = flowkit.App(
    "llm", flows=[pipeline], llm_model="test-model", llm_prices={"test-model": (1.0, 2.0)}
)
GOOD = json.dumps({"min_credit_score": 680, "industries": ["retail"]})


@pytest.fixture
def llm_app(tmp_path: Path, openai_server: FakeOpenAI) -> Iterator[flowkit.App]:  # noqa: F811
    with embedded(app, tmp_path) as a:
        yield a


def test_structured_output_and_usage(llm_app: flowkit.App, openai_server: FakeOpenAI) -> None:  # noqa: F811
    openai_server.script = [GOOD]
    run = pipeline.submit("credit 680+, retail only")
    assert run.result(timeout=10) == Criteria(min_credit_score=680, industries=["retail"])
    (req,) = openai_server.requests
    assert req["model"] == "test-model"
    assert req["response_format"]["type"] == "json_schema"
    assert "min_credit_score" in req["messages"][0]["content"]  # the schema is in the prompt
    usage = run.steps()[0].usage
    assert usage is not None
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (11, 7)
    assert usage["cost"] == pytest.approx((11 * 1.0 + 7 * 2.0) / 1_000_000)


def test_a_429_is_retried_as_a_step_retry(llm_app: flowkit.App, openai_server: FakeOpenAI) -> None:  # noqa: F811
    openai_server.script = [429, GOOD]
    run = pipeline.submit("x")
    assert run.result(timeout=10).min_credit_score == 680
    assert run.steps()[0].attempts == 2


def test_a_5xx_is_retried_too(llm_app: flowkit.App, openai_server: FakeOpenAI) -> None:  # noqa: F811
    openai_server.script = [500, GOOD]
    assert pipeline.submit("y").result(timeout=10).industries == ["retail"]


def test_an_invalid_answer_is_reasked_within_the_attempt(
    llm_app: flowkit.App,
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    openai_server.script = ["not json at all", GOOD]
    run = pipeline.submit("z")
    assert run.result(timeout=10).min_credit_score == 680
    assert run.steps()[0].attempts == 1
    assert len(openai_server.requests) == 2
    reask = openai_server.requests[1]["messages"][-1]["content"]
    assert "not valid for the schema" in reask


def test_bounded_reasks_then_a_clear_error_and_no_retries(
    llm_app: flowkit.App,
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    openai_server.script = ["{", json.dumps({"min_credit_score": "high"}), "[]"]
    run = pipeline.submit("w")
    with pytest.raises(flowkit.RunFailed) as info:
        run.result(timeout=10)
    assert info.value.error_type == "LLMOutputError"
    assert "no valid Criteria after 3 answer(s)" in info.value.error_message
    assert run.steps()[0].attempts == 1
    assert len(openai_server.requests) == 3
    assert "sk-test-secret-key" not in (info.value.traceback or "") + info.value.error_message


def test_the_cache_answers_the_same_question_once(
    llm_app: flowkit.App,
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    openai_server.script = [GOOD]
    first = pipeline.submit("same question")
    answer = first.result(timeout=10)
    second = pipeline.submit("same question")
    assert second.result(timeout=10) == answer
    assert len(openai_server.requests) == 1
    usages = [first.steps()[0].usage, second.steps()[0].usage]
    assert sorted(u.get("cached_calls", 0) for u in usages if u) == [0, 1]


def test_missing_configuration_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(flowkit.ConfigurationError, match="set OPENAI_API_KEY"):
        llm.structured(Criteria, "x", model="m")
    with pytest.raises(flowkit.ConfigurationError, match="no model"):
        monkeypatch.delenv("FLOWKIT_LLM_MODEL", raising=False)
        llm.complete("x")


def test_complete_returns_text(openai_server: FakeOpenAI) -> None:  # noqa: F811
    openai_server.script = ["hello there"]
    assert llm.complete("hi", model="m") == "hello there"
