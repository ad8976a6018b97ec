"""Six short sample documents of two organisations, always the same.

As a script it writes them as JSON lines, one ``Document`` each, ready for
``flowkit emit ... --data @file``-style use::

    python examples/multiqueue/mq_samples.py > documents.jsonl
"""

from __future__ import annotations

import sys

from mq_models import Document

_DOCS: tuple[tuple[str, str, str, str], ...] = (
    (
        "doc-incident-0412",
        "acme",
        "Payment gateway outage, 12 April",
        """The payment gateway was down for 47 minutes during the evening peak.
# Timeline
At 19:02 the error rate of card payments rose above 30 percent. The on-call engineer
restarted the gateway pods at 19:20, which did not help. At 19:49 the expired TLS
certificate of the card processor connection was replaced and payments recovered.
# Impact
About 3,100 card payments failed. Customers retried most of them; 212 orders were lost.
# Follow-up
Certificate expiry is now monitored. The incident review asks for an alert thirty days
before any certificate of the gateway expires, and for a runbook entry.""",
    ),
    (
        "doc-budget-q3",
        "acme",
        "Q3 budget review",
        """Spending is at 96 percent of the quarterly budget with three weeks to go.
# Overrun
Cloud costs ran 18 percent over plan after the analytics cluster was resized. The
resize was needed for the new reporting deadline and will be reverted in October.
# Actions
Finance asks every team to defer non-essential purchases until the quarter closes.
Travel stays allowed for customer visits.""",
    ),
    (
        "doc-onboarding",
        "acme",
        "Engineering onboarding guide",
        """Welcome to the engineering team.
# First week
You get a laptop, accounts for the code host and the chat, and a buddy who answers
questions. Pair with your buddy on a small bug fix and ship it by Friday.
# Tools
We use the main repository, continuous integration on every change, and feature flags
for anything risky. Read the architecture notes in the wiki before your second week.""",
    ),
    (
        "doc-advisory-77",
        "globex",
        "Security advisory: template engine vulnerability",
        """A vulnerability in the template engine allows server-side code execution.
# Exposure
Two internal services render user-supplied templates with the affected version. No
breach has been detected in the access logs of the last ninety days.
# Remediation
Upgrade the template engine to the patched release today. Until then, disable custom
templates in the customer portal. Security will scan all services again tomorrow.""",
    ),
    (
        "doc-contract-renewal",
        "globex",
        "Logistics vendor contract renewal",
        """The contract with our logistics vendor ends on 30 November.
# Terms
The vendor proposes a three-year renewal with prices 6 percent higher and a penalty
for late payment. Delivery times stay the same.
# Recommendation
Procurement recommends a one-year renewal while two other vendors are evaluated, and
asks legal to remove the penalty clause.""",
    ),
    (
        "doc-offsite",
        "globex",
        "Team offsite plan",
        """The team offsite takes place in Lisbon in the second week of May.
# Agenda
Two days of planning for the next half year, one day of workshops, and a dinner with
the whole team on the last evening.
# Logistics
Flights are booked by each person and expensed. The hotel is near the venue, and the
office manager collects dietary requirements by the end of March.""",
    ),
)


def documents() -> list[Document]:
    """The sample documents, in a fixed order."""
    return [Document(document_id=i, org_id=o, title=t, body=b) for i, o, t, b in _DOCS]


if __name__ == "__main__":
    for doc in documents():
        sys.stdout.write(doc.model_dump_json() + "\n")
