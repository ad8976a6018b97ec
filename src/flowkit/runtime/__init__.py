"""The runtime protocol (see ``docs/runtime.md``): the only code that decides state transitions."""
