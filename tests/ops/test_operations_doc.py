"""docs/operations.md documents every metric, the admin routes and the probes."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from shared import metrics

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()


def test_every_metric_is_documented() -> None:
    names = []
    for obj in vars(metrics).values():
        if isinstance(obj, (Counter, Gauge, Histogram)):
            # A counter's family is named without _total; the exposition (and the doc) has it.
            names += [f.name + ("_total" if f.type == "counter" else "") for f in obj.describe()]
    missing = [n for n in names if f"`{n}`" not in DOC]
    assert not missing, f"docs/operations.md lacks these metrics (add them to its tables): {missing}"


def test_admin_routes_and_probes_are_documented() -> None:
    for route in ("/admin/status", "/admin/reset-queues", "/healthz", "/readyz", "DRAIN_GRACE_S", "ADMIN_TOKEN"):
        assert route in DOC, route
