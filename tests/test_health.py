"""ops/health.py's server on its own: the `name[]` filter of /metrics."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client import Counter

from hl7bus.ops import health
from hl7bus.ops.processes import free_port

_KEPT = Counter("hl7bus_test_health_kept_total", "A family the scrape asks for.")
_OTHER = Counter("hl7bus_test_health_other_total", "A family the scrape does not ask for.")


async def _ready() -> bool:
    return True


async def _scrape(path: str) -> str:
    port = free_port()
    runner = await health.start_http("127.0.0.1", port, _ready)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}{path}") as response,
        ):
            assert response.status == 200
            return await response.text()
    finally:
        await runner.cleanup()


def test_metrics_serves_only_the_named_families() -> None:
    _KEPT.inc(3)
    _OTHER.inc()
    page = asyncio.run(_scrape("/metrics?name[]=hl7bus_test_health_kept_total"))
    assert "hl7bus_test_health_kept_total 3.0" in page
    assert "hl7bus_test_health_other" not in page
    assert "process_cpu_seconds_total" not in page  # the collectors are not asked either
    full = asyncio.run(_scrape("/metrics"))
    assert "hl7bus_test_health_kept_total" in full
    assert "hl7bus_test_health_other_total" in full
