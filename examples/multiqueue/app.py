"""Three queues, one workflow: what ``flowkit worker --queues ...`` loads.

The Temporal platform ran three workers, one per task queue (default, ml,
openai), and routed each activity with ``task_queue=``. Here each step names
its :class:`flowkit.Queue`, and each queue carries the limits that held its
worker in check::

    flowkit worker examples/multiqueue/app.py:app --queues default
    flowkit worker examples/multiqueue/app.py:app --queues ml --threads 1
    flowkit worker examples/multiqueue/app.py:app --queues openai --threads 4

Importing this module only defines the queues, the workflow and ``app``;
nothing connects until the first submit or worker start. The siblings are
imported as top-level modules: the flowkit CLI puts this file's folder on
``sys.path`` before loading it by path, as ``python run.py`` does.
"""

from __future__ import annotations

import os

from mq_tasks import extract_text, store_analysis, summarize, train_model

import flowkit

__all__ = ["analysis", "app", "default", "ml", "openai"]

#: General work: parsing, storage. As many at once as the workers have threads.
default = flowkit.Queue("default")
#: Training: one at a time over every worker, like a single GPU.
ml = flowkit.Queue("ml", concurrency=1)
#: Remote LLM calls: at most 30 starts a minute and 4 at once, over every worker.
openai = flowkit.Queue("openai", rate_limit="30/m", concurrency=4)

analysis = flowkit.Workflow("document_analysis", on="document:uploaded", timeout="1h")
extracted = analysis.step(queue=default, timeout="30s")(extract_text)
trained = analysis.step(after=extracted, queue=ml, timeout="15m", retries=1)(train_model)
summarized = analysis.step(
    after=[extracted, trained], queue=openai, timeout="60s", retries=5, min_backoff="2s"
)(summarize)
analysis.step(after=summarized, queue=default, timeout="30s")(store_analysis)

app = flowkit.App(
    "multiqueue",
    flows=[analysis],
    # The summarizer's model unless FLOWKIT_LLM_MODEL names another, and its price in USD
    # per million prompt and completion tokens, so each summary's cost is recorded.
    llm_model=os.environ.get("FLOWKIT_LLM_MODEL", "gpt-4o-mini"),
    llm_prices={"gpt-4o-mini": (0.15, 0.60)},
)
