"""A step may take any ancestor as a parent: what a join after a fan-out receives.

Pins the behaviour docs/workflows.md describes ("Reading an earlier step's output"):
the join gets the ancestor's output and every item's, each item only its own item.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import flowkit
from flowkit.testing import embedded


class Upload(BaseModel):
    owner: str
    pages: list[str]


class Normalized(BaseModel):
    owner: str
    pages: list[str]


class Page(BaseModel):
    n: int
    text: str


class Verified(BaseModel):
    n: int
    ok: bool


class Report(BaseModel):
    owner: str
    checked: list[int]
    unreadable: list[int]


seen_items: list[tuple[int | None, Page]] = []
seen_joins: list[int | None] = []
_lock = threading.Lock()

documents = flowkit.Workflow("documents")


@documents.step
def normalize(upload: Upload) -> Normalized:
    return Normalized(owner=upload.owner.strip().lower(), pages=[p.strip() for p in upload.pages])


@documents.step(after=normalize)
def split(doc: Normalized) -> list[Page]:
    return [Page(n=i, text=text) for i, text in enumerate(doc.pages)]


@documents.step(after=split, each=True)
def verify_document(page: Page, ctx: flowkit.Context) -> Verified:
    with _lock:
        seen_items.append((ctx.item, page))
    return Verified(n=page.n, ok=bool(page.text))


@documents.step(after=[normalize, verify_document])
def report(normalize: Normalized, verify_document: list[Verified], ctx: flowkit.Context) -> Report:
    with _lock:
        seen_joins.append(ctx.item)
    return Report(
        owner=normalize.owner,
        checked=[v.n for v in verify_document],
        unreadable=[v.n for v in verify_document if not v.ok],
    )


# The same shape with a settled join: the ancestor's output next to results and failures.
settled = flowkit.Workflow("documents_settled")


@settled.step(name="normalize")
def normalize2(upload: Upload) -> Normalized:
    return Normalized(owner=upload.owner.strip().lower(), pages=[p.strip() for p in upload.pages])


@settled.step(after="normalize", name="split")
def split2(doc: Normalized) -> list[Page]:
    return [Page(n=i, text=text) for i, text in enumerate(doc.pages)]


@settled.step(after="split", each=True, name="verify_document", retries=0)
def verify2(page: Page) -> Verified:
    if not page.text:
        raise ValueError(f"page {page.n} is blank")
    return Verified(n=page.n, ok=True)


@settled.step(after=["normalize", "verify_document"], name="report")
def report2(normalize: Normalized, verify_document: flowkit.Settled[Verified]) -> Report:
    return Report(
        owner=normalize.owner,
        checked=[v.n for v in verify_document.results],
        unreadable=[f.item for f in verify_document.failures],
    )


app = flowkit.App("ancestors", flows=[documents, settled])


@pytest.fixture
def running(tmp_path: Path) -> Iterator[flowkit.App]:
    seen_items.clear()
    seen_joins.clear()
    with embedded(app, tmp_path, threads=4) as a:
        yield a


def test_a_join_receives_an_ancestors_output_and_every_item(running: flowkit.App) -> None:
    run = documents.submit({"owner": " Ana ", "pages": ["intro ", "", "terms"]})
    assert run.result(timeout=30) == Report(owner="ana", checked=[0, 1, 2], unreadable=[1])
    (join,) = [s for s in run.steps() if s.name == "report"]
    assert join.input == {
        "normalize": {"owner": "ana", "pages": ["intro", "", "terms"]},
        "verify_document": [{"n": 0, "ok": True}, {"n": 1, "ok": False}, {"n": 2, "ok": True}],
    }
    assert seen_joins == [None]  # one join, not one per item


def test_each_item_receives_only_its_item(running: flowkit.App) -> None:
    run = documents.submit({"owner": "ana", "pages": ["a", "b"]})
    run.result(timeout=30)
    assert sorted(seen_items, key=lambda seen: seen[1].n) == [
        (0, Page(n=0, text="a")),
        (1, Page(n=1, text="b")),
    ]
    items = [s for s in run.steps() if s.name == "verify_document"]
    inputs = sorted((s.item or 0, s.input) for s in items)
    assert inputs == [(0, {"n": 0, "text": "a"}), (1, {"n": 1, "text": "b"})]


def test_an_empty_fan_out_still_gives_the_join_the_ancestors_output(
    running: flowkit.App,
) -> None:
    run = documents.submit({"owner": "Bo", "pages": []})
    assert run.result(timeout=30) == Report(owner="bo", checked=[], unreadable=[])


def test_a_settled_join_gets_the_ancestor_next_to_results_and_failures(
    running: flowkit.App,
) -> None:
    run = settled.submit({"owner": "ana", "pages": ["a", "", "c"]})
    assert run.result(timeout=30) == Report(owner="ana", checked=[0, 2], unreadable=[1])
