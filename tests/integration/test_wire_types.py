"""Temu answers whose values come in another JSON type than temu-api.md shows ("parse responses
defensively"): the engine must read them for what they mean, against the simulator over HTTP."""

from __future__ import annotations

from dataclasses import replace

from engine.app.runtime import open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.sim.config import SimConfig
from tests.fixtures_sim import SimFactory


async def test_quoted_error_codes_keep_their_meaning(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    """errorCode "4000004" (a string) is still a rate limit: counted, slowed for and retried,
    and the backfill stores every order. Temu allows 3 req/s; the engine is set for 30."""
    config = SimConfig.default(orders=300, returns=0, shops=1, qps=3, seed=4)
    sim = await sim_factory(config)
    sim.set_modes(string_error_codes=True)
    settings = settings_for_simulator(sim, config, database_url=pg_url, schema=schema)
    settings = replace(settings, apps=tuple(replace(a, qps=30.0) for a in settings.apps))
    rt = await open_runtime(settings)
    try:
        await rt.sync_service().backfill(settings.sync.start, None)
        stored = await rt.pool.fetchval("SELECT count(*) FROM orders")
    finally:
        await rt.close()
    app = sim.stats(arrivals=False)["apps"]["sim-app-1"]
    refused = app["rejected_rate_limit"] + app["rejected_storm"]
    assert refused > 0, app
    assert not rt.counters.shops_failed
    assert rt.stats.rate_limited == refused
    assert stored == len(sim.truth_orders("shop-1"))
