"""The four steps of the document analysis, as plain typed functions.

``app.py`` routes each to its queue, as the Temporal workflow passed
``task_queue=`` to each activity:

- ``extract_text`` and ``store_analysis``: plain Python, the default queue;
- ``train_model``: compute-heavy (simulated, deterministic), the ml queue;
- ``summarize``: a remote LLM call when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL``
  is set (through ``flowkit.llm``, imported only there), else a deterministic
  extractive summary; the openai queue.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections import Counter
from pathlib import Path

from mq_models import (
    Analysis,
    Document,
    Extracted,
    ModelCard,
    Risk,
    Section,
    Summarized,
    Summary,
)

import flowkit

_WORD = re.compile(r"[a-z][a-z'-]{2,}")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_STOPWORDS_TEXT = """
about after again all also and any are because been before being both but can could did does
each few for from had has have how its into just more most not now off once only other our out
over own same she should some such than that the their them then there these they this those
through too under until very was were what when where which while who will with would you your
we us per via
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
HIGH_RISK = frozenset({"outage", "breach", "incident", "fraud", "lawsuit", "vulnerability"})
MEDIUM_RISK = frozenset({"delay", "overrun", "deadline", "complaint", "penalty", "renewal"})
#: PBKDF2 rounds per epoch: the simulated GPU time of one training epoch (~20-50 ms).
ROUNDS_PER_EPOCH = 40_000
EPOCHS = 3


def extract_text(doc: Document) -> Extracted:
    """Cut the body into sections at ``#`` headings and normalise the whitespace."""
    sections: list[Section] = []
    heading = doc.title
    lines: list[str] = []

    def flush() -> None:
        text = " ".join(" ".join(lines).split())
        if text:
            sections.append(Section(heading=heading, text=text, words=len(text.split())))

    for line in doc.body.splitlines():
        if line.lstrip().startswith("#"):
            flush()
            heading, lines = line.strip().lstrip("#").strip() or doc.title, []
        else:
            lines.append(line)
    flush()
    if not sections:
        raise flowkit.PermanentError(f"document {doc.document_id} has no text")
    return Extracted(
        document_id=doc.document_id,
        org_id=doc.org_id,
        title=doc.title,
        sections=sections,
        words=sum(s.words for s in sections),
    )


def _tokens(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def train_model(doc: Extracted, ctx: flowkit.Context) -> ModelCard:
    """Fit a tiny TF-IDF topic model to the document, in a few simulated epochs.

    Deterministic: the same document gives the same model id, losses and
    keywords. Each epoch burns some CPU, like the LoRA fine-tuning the ml
    workers of the old platform ran, and a cancelled run stops between epochs.
    """
    per_section = [Counter(_tokens(s.text)) for s in doc.sections]
    vocabulary = sorted(set().union(*per_section))
    n = len(per_section)
    idf = {w: math.log((1 + n) / (1 + sum(w in c for c in per_section))) + 1 for w in vocabulary}
    weight: dict[str, float] = {}
    for counts in per_section:
        total = sum(counts.values()) or 1
        for w, k in counts.items():
            weight[w] = weight.get(w, 0.0) + k / total * idf[w]
    keywords = [w for w, _ in sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
    digest = hashlib.sha256(" ".join([doc.org_id, *vocabulary]).encode()).digest()
    losses: list[float] = []
    base = 2.0 + (len(vocabulary) % 17) / 10
    for epoch in range(EPOCHS):
        if ctx.cancelled:  # a long step checks: the run was cancelled or timed out
            ctx.logger.info("run cancelled; stopping after %d epoch(s)", epoch)
            break
        digest = hashlib.pbkdf2_hmac("sha256", digest, b"epoch", ROUNDS_PER_EPOCH)
        losses.append(round(base * 0.55**epoch + digest[0] / 2550, 4))
    hits = [sum(c[w] for w in keywords) for c in per_section]
    top = max(hits) or 1
    card = ModelCard(
        model_id="topic-" + digest.hex()[:12],
        org_id=doc.org_id,
        epochs=len(losses),
        losses=losses,
        keywords=keywords,
        section_scores=[round(h / top, 3) for h in hits],
    )
    ctx.logger.info("trained %s: loss %s, keywords %s", card.model_id, losses, keywords)
    return card


def _first_sentence(text: str) -> str:
    return _SENTENCE.split(text, maxsplit=1)[0]


def fallback_summary(doc: Extracted, model: ModelCard) -> Summary:
    """An extractive summary: the first sentence of the most relevant sections."""
    # most relevant first, in document order among equals
    ranked = sorted(range(len(doc.sections)), key=lambda i: (-model.section_scores[i], i))
    points = [_first_sentence(doc.sections[i].text) for i in ranked[:3]]
    words = set(_tokens(" ".join(s.text for s in doc.sections)))
    risk: Risk = "high" if words & HIGH_RISK else "medium" if words & MEDIUM_RISK else "low"
    headline = " ".join(f"{doc.title}: {points[0]}".split()[:20])
    return Summary(headline=headline, key_points=points, risk=risk)


SYSTEM_PROMPT = (
    "You summarise internal documents for a busy reader. Answer with a one-sentence "
    "headline, three to five key points and how urgently the document should be read."
)


def _prompt(doc: Extracted, model: ModelCard) -> str:
    body = "\n\n".join(f"## {s.heading}\n{s.text}" for s in doc.sections)
    return (
        f"Title: {doc.title}\nKeywords: {', '.join(model.keywords)}\n\n{body[:12_000]}"
        "\n\nSummarise this document."
    )


def llm_configured() -> bool:
    """Whether an LLM endpoint is configured: OpenAI itself, or a compatible server."""
    return bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))


def llm_summary(doc: Extracted, model: ModelCard, ctx: flowkit.Context) -> Summary | None:
    """Ask the LLM for a :class:`Summary` through ``flowkit.llm``; ``None`` if it cannot be used.

    A rate limit (429) raises ``flowkit.RetryAfter`` and a server error or timeout is retried
    with the step's backoff; both come back through the openai queue's limits.
    """
    try:
        # Imported here, not at the top: only the openai queue's workers need the
        # openai client, and the other workers start without it.
        from flowkit import llm
    except ImportError as exc:
        ctx.logger.warning("flowkit.llm is not available (%s): fallback summary", exc)
        return None
    try:
        return llm.structured(Summary, _prompt(doc, model), ctx=ctx, system=SYSTEM_PROMPT)
    except flowkit.ConfigurationError as exc:  # no openai package, no model name
        ctx.logger.warning("cannot call the LLM (%s): fallback summary", exc)
        return None


def summarize(extract_text: Extracted, train_model: ModelCard, ctx: flowkit.Context) -> Summarized:
    """Summarise with an LLM when one is configured, else with :func:`fallback_summary`.

    The parameters are named after the two parent steps: this step runs once
    both are done and receives each one's output.
    """
    summary = llm_summary(extract_text, train_model, ctx) if llm_configured() else None
    if summary is not None:
        by = ", ".join(ctx.usage.get("models", [])) or "llm"
    else:
        summary, by = fallback_summary(extract_text, train_model), "fallback"
    return Summarized(
        document_id=extract_text.document_id,
        title=extract_text.title,
        model_id=train_model.model_id,
        keywords=train_model.keywords,
        summary=summary,
        summarized_by=by,
    )


#: Where analyses go without ``$MQ_OUTPUT_DIR``: the system's temporary folder, so that
#: running the example from a checkout leaves nothing in it.
DEFAULT_OUTPUT = Path(tempfile.gettempdir()) / "flowkit-multiqueue-analyses"


def output_dir() -> Path:
    """Where analyses are written: ``$MQ_OUTPUT_DIR``, default :data:`DEFAULT_OUTPUT`."""
    configured = os.environ.get("MQ_OUTPUT_DIR")
    return Path(configured).resolve() if configured else DEFAULT_OUTPUT


def store_analysis(result: Summarized) -> Analysis:
    """Write the analysis as JSON; writing it again replaces it, so a retry is harmless."""
    folder = output_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.document_id}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.model_dump(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: readers never see half a file
    return Analysis(
        document_id=result.document_id,
        title=result.title,
        headline=result.summary.headline,
        risk=result.summary.risk,
        keywords=result.keywords,
        summarized_by=result.summarized_by,
        path=str(path),
    )
