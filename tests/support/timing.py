"""How much later than promised a test may see a deadline fire on a loaded, shared 2-core box.

A test asserts deadlines the product promises (behaviour), never speed (bench/ measures that).
Between the promised moment and the test noticing it lie event-loop lag, thread and process
scheduling and the other test runs sharing the two cores: seconds, not milliseconds. Bounds are
written as ``promised + LOAD_MARGIN_S``, and only where that sum still tells the promise from what a
regression would do (a fallback deadline further out, or never); where it would not, the test says
what it compares against instead. Lower bounds stay exact: a deadline that fired early is a bug.
"""

from __future__ import annotations

LOAD_MARGIN_S = 5.0
