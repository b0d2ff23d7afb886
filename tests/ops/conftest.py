"""Fixtures for operations tests: service subprocesses (tests/support/procs.py)."""

from tests.support.procs import procs  # noqa: F401
