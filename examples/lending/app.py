"""The lending workflows and their App: what ``flowkit worker``/``dev``/``emit``/``graph`` load.

Importing this module only defines ``lender_processing``, ``loan_matching``
and ``app``; nothing connects until the first emit or worker start. The
broker and the database come from ``FLOWKIT_BROKER_URL`` (default
``memory://``) and ``FLOWKIT_DATABASE_URL`` (default ``sqlite:///flowkit.db``);
the example's own tables (:mod:`lend_db`) live in the same database::

    flowkit worker examples/lending/app.py:app --processes 2 --threads 8
    flowkit emit examples/lending/app.py:app loan:application:uploaded \\
        --data '{"application_id": 1}'
    flowkit graph examples/lending/app.py:loan_matching

The siblings are imported as top-level modules: the flowkit CLI puts this
file's folder on ``sys.path`` before loading it by path, as ``python run.py`` does.
"""

from __future__ import annotations

from lend_lenders import (
    extract_criteria,
    extract_text,
    fetch_lender,
    update_lender,
    validate_criteria,
)
from lend_matching import check, finalize, match, prepare, unprocessed

import flowkit

__all__ = ["app", "lender_processing", "loan_matching"]

#: Each workflow has its own queue, so each can get its own workers (--queues).
LENDERS, MATCHING = "lending.lenders", "lending.matching"

#: The Hatchet lender processing workflow: five steps in a line, 120 s each.
lender_processing = flowkit.Workflow("lender-processing", on="lender:document:uploaded")
fetched = lender_processing.step(timeout="120s", retries=3, queue=LENDERS)(fetch_lender)
text = lender_processing.step(after=fetched, timeout="120s", retries=3, queue=LENDERS)(extract_text)
# The model call: more attempts, and a longer first backoff for rate limits.
extracted = lender_processing.step(
    after=text, timeout="120s", retries=5, min_backoff="5s", queue=LENDERS
)(extract_criteria)
validated = lender_processing.step(after=extracted, timeout="120s", retries=3, queue=LENDERS)(
    validate_criteria
)
lender_processing.step(after=validated, timeout="120s", retries=3, queue=LENDERS)(update_lender)

#: The Hatchet loan matching workflow: prepare (60 s), match every lender (300 s), finalize (30 s);
#: here each lender's match is its own task, with its own 300 s. Before it, the lenders still
#: waiting for their processing are processed by the workflow above, run as a child flow: one
#: child run per lender, which the step waits for as a row, holding no worker thread.
loan_matching = flowkit.Workflow("loan-matching", on="loan:application:uploaded")
checked = loan_matching.step(timeout="60s", retries=3, queue=MATCHING)(check)
pending = loan_matching.step(after=checked, timeout="60s", retries=3, queue=MATCHING)(unprocessed)
processing = loan_matching.call(
    lender_processing, after=pending, each=True, name="process_lenders", queue=MATCHING
)
prepared = loan_matching.step(
    after=[checked, processing], timeout="60s", retries=3, queue=MATCHING
)(prepare)
matched = loan_matching.step(after=prepared, each=True, timeout="300s", retries=3, queue=MATCHING)(
    match
)
loan_matching.step(after=matched, timeout="30s", retries=3, queue=MATCHING)(finalize)

app = flowkit.App(
    "lending",
    flows=[lender_processing, loan_matching],
    # USD per million (prompt, completion) tokens: flowkit records each LLM step's cost.
    llm_prices={"gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00)},
)
