"""The runtime protocol (DESIGN §3): the only code that decides state transitions."""
