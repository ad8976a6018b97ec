"""``python -m flowkit`` is the ``flowkit`` command."""

from .cli.main import main

raise SystemExit(main())
