"""The expense-approval workflows and their App: what ``flowkit dev``/``worker``/``emit`` load.

Importing this module only defines the flows and ``app``; nothing connects
until the first submit or worker start. The broker and the database come from
``FLOWKIT_BROKER_URL`` (default ``memory://``) and ``FLOWKIT_DATABASE_URL``
(default ``sqlite:///flowkit.db``)::

    flowkit dev examples/approvals/app.py:app
    flowkit emit examples/approvals/app.py:app expense:submitted --data @expense.json
    flowkit signal RUN_ID approval --data '{"approver": "ana", "approved": true}' \\
        --app examples/approvals/app.py:app
    flowkit scheduler examples/approvals/app.py:app

The siblings are imported as top-level modules: the flowkit CLI puts this
file's folder on ``sys.path`` before loading it by path, as ``python run.py`` does.
"""

from __future__ import annotations

from appr_steps import book, check_budget, daily_report, enrich, review, validate

import flowkit

__all__ = ["app", "expense_approval", "expense_approval_short", "expense_workflow", "nightly"]

#: Every step runs on this queue. Queue names are shared by everything on a RabbitMQ
#: vhost, so an App's own name keeps its messages away from other Apps' workers.
QUEUE = "approvals"


def expense_workflow(
    name: str, *, on: str | None = None, approval_window: str, deadline: str
) -> flowkit.Workflow:
    """The expense-approval graph, with how long to wait for a decision.

    ``validate -> enrich -> check_budget -> review -> book``: ``check_budget``
    calls the flaky budget service and retries; ``review`` waits for the
    ``approval`` signal for ``approval_window``, then runs without it and
    auto-rejects the expense (``flowkit retry RUN_ID --from review`` re-opens
    the decision); past ``deadline`` the whole run ends ``timed_out``.
    """
    wf = flowkit.Workflow(name, on=on, timeout=deadline)
    checked = wf.step(queue=QUEUE, timeout="10s")(validate)
    enriched = wf.step(after=checked, queue=QUEUE, timeout="10s")(enrich)
    budgeted = wf.step(
        after=enriched,
        queue=QUEUE,
        retries=3,
        min_backoff="200ms",
        max_backoff="5s",
        timeout="30s",
    )(check_budget)
    decided = wf.step(
        after=budgeted,
        queue=QUEUE,
        wait_for="approval",  # the run waits here, holding no worker thread
        timeout=approval_window,  # then review gets a flowkit.TimedOut: auto-rejected
    )(review)
    wf.step(after=decided, queue=QUEUE, retries=5, timeout="30s")(book)
    return wf


#: Started by the ``expense:submitted`` event; a decision is awaited for 24 hours.
expense_approval = expense_workflow(
    "expense_approval", on="expense:submitted", approval_window="24h", deadline="72h"
)
#: The same graph with a 2-second approval window, so run.py can show an auto-rejection.
expense_approval_short = expense_workflow(
    "expense_approval_short", approval_window="2s", deadline="1h"
)

#: Every night at 02:00 UTC (``flowkit scheduler``): count the last 24 hours' expenses.
nightly = flowkit.Workflow("approvals_daily_report", schedule="0 2 * * *")
nightly.step(queue=QUEUE, timeout="60s")(daily_report)

app = flowkit.App("approvals", flows=[expense_approval, expense_approval_short, nightly])
