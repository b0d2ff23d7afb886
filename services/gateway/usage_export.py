"""``GET /metrics/tenants``: today's usage per API key as Prometheus series, for operators who opt in.

The aggregate counters on ``/metrics`` carry no key label: one series per key and counter grows with
the number of keys, which is a Prometheus cost the operator must choose (``METRICS_PER_TENANT=true``).
Even then only the day's ``METRICS_TENANTS_TOP`` most active keys are exported. Values come from Redis,
so every gateway answers the same (scrape one, or take ``max by (key_id)``); they are the UTC day's
totals so far and fall to zero at midnight, which ``increase()``/``rate()`` treat as a counter reset.
The route needs ADMIN_TOKEN: which tenants exist and what they use is the operator's business.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.appkeys import SERVICES
from gateway.auth.guard import require_admin
from gateway.auth.routes import _json_errors
from gateway.keylimits.limiter import utc_day
from gateway.usage_reads import read_day_summary
from shared.errors import NotFound

# (series name, help, field of a day row)
_SERIES = (
    ("tts_tenant_billed_characters", "Characters sent to a paid upstream today (UTC), per key", "billed_chars"),
    ("tts_tenant_synthesized_characters", "Characters freshly synthesized today (UTC), per key",
     "synthesized_chars"),
    ("tts_tenant_cached_characters", "Characters answered from the phrase cache today (UTC), per key",
     "cached_chars"),
    ("tts_tenant_audio_seconds", "Audio seconds delivered today (UTC), per key", "audio_seconds"),
)


class _Snapshot:
    """A one-shot collector over metric families already read."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


@_json_errors
async def tenant_metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the day's most active keys' usage (404 unless METRICS_PER_TENANT)."""
    await require_admin(request)  # first: whether the exporter is on is no business of a stranger either
    services = request.app[SERVICES]
    if not services.settings.metrics_per_tenant:
        raise NotFound("per-tenant metrics are off (METRICS_PER_TENANT)")
    summary = await read_day_summary(services.redis, utc_day(time.time()), services.settings.metrics_tenants_top)
    families: list[Metric] = []
    for name, doc, field in _SERIES:
        family = CounterMetricFamily(name, doc, labels=["key_id"])
        for row in summary["keys"]:
            family.add_metric([row["key_id"]], row[field])
        families.append(family)
    active = GaugeMetricFamily("tts_tenant_keys_with_usage", "Keys with usage today (UTC), exported or not")
    active.add_metric([], summary["keys_with_usage"])
    families.append(active)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))  # type: ignore[arg-type]
    resp = web.Response(body=generate_latest(registry))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp
