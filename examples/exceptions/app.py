"""The exception pipeline and its App: what ``flowkit worker``/``dev``/``submit`` load.

Importing this module only defines ``pipeline`` and ``app``; nothing connects
until the first submit or worker start. The broker and the database come from
``FLOWKIT_BROKER_URL`` (default ``memory://``) and ``FLOWKIT_DATABASE_URL``
(default ``sqlite:///flowkit.db``)::

    flowkit dev examples/exceptions/app.py:pipeline
    flowkit worker examples/exceptions/app.py:pipeline --stages triage --threads 4

The siblings are imported as top-level modules: the flowkit CLI puts this
file's folder on ``sys.path`` before loading it by path, as ``python run.py`` does.
"""

from __future__ import annotations

from exc_stages import feedback, intake, playbook, policy, tool, triage

import flowkit

__all__ = ["app", "pipeline"]

#: intake -> triage -> policy -> playbook -> tool -> feedback; each edge is type-checked here.
pipeline = flowkit.Pipeline("exceptions", [intake, triage, policy, playbook, tool, feedback])
app = flowkit.App("exceptions", flows=[pipeline])
