"""Fault-suite fixtures: service processes (tests/support/procs.py) with their logs checked at teardown."""

from tests.support.procs import procs  # noqa: F401
