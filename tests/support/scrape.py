"""Read a running service's ``/metrics`` as Prometheus would: tests assert on the public surface."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, list[tuple[dict[str, str], float]]]


async def scrape(http: aiohttp.ClientSession, base: str) -> Samples:
    """Every sample ``base/metrics`` exposes, by sample name."""
    async with http.get(base + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there are none)."""
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


async def metric(http: aiohttp.ClientSession, base: str, name: str, **labels: str) -> float:
    """One scrape, one value (see :func:`value`)."""
    return value(await scrape(http, base), name, **labels)
