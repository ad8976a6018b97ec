"""The values carried between the steps of the document-analysis workflow."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Risk = Literal["low", "medium", "high"]


class Document(BaseModel):
    """An uploaded document: the payload of the ``document:uploaded`` event."""

    document_id: str = Field(min_length=1, max_length=64)
    org_id: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=300)
    body: str = Field(max_length=1_000_000, description="Markdown-ish text: '#' headings")


class Section(BaseModel):
    """One section of a document: a heading and its text."""

    heading: str
    text: str
    words: int


class Extracted(BaseModel):
    """``extract_text``'s output (default queue): the document cut into sections."""

    document_id: str
    org_id: str
    title: str
    sections: list[Section]
    words: int


class ModelCard(BaseModel):
    """``train_model``'s output (ml queue): a small topic model fitted to the document."""

    model_id: str
    org_id: str
    epochs: int
    losses: list[float]
    keywords: list[str]
    #: how relevant each section is to the document's keywords, 0..1, in section order
    section_scores: list[float]


class Summary(BaseModel):
    """What the summarizer returns, from the LLM (structured output) or the fallback."""

    headline: str = Field(description="one sentence, at most 20 words")
    key_points: list[str] = Field(description="three to five short points")
    risk: Risk = Field(description="how urgently someone should read the document")


class Summarized(BaseModel):
    """``summarize``'s output (openai queue): the summary and who wrote it."""

    document_id: str
    title: str
    model_id: str
    keywords: list[str]
    summary: Summary
    summarized_by: str = Field(description="the LLM model's name, or 'fallback'")


class Analysis(BaseModel):
    """``store_analysis``'s output (default queue), the run's result."""

    document_id: str
    title: str
    headline: str
    risk: Risk
    keywords: list[str]
    summarized_by: str
    path: str
