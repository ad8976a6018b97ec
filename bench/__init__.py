"""flowkit's benchmark harness: ``python -m bench`` (or ``nox -s bench``)."""
