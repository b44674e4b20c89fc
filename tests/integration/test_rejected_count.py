"""interface.md: the summary's ``rejected`` counts the records set aside during the run. A
poisoned record read twice in one run (an overlap, a window read again) is one record, as
rejected_records, status and /metrics count it, not one per sighting."""

from __future__ import annotations

from engine.app.runtime import open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.sim.config import SimConfig
from tests.fixtures_sim import SimFactory


async def test_a_record_set_aside_twice_in_a_run_counts_once(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    config = SimConfig.default(orders=200, returns=30, shops=2, qps=100, seed=1, poison=True)
    sim = await sim_factory(config)
    settings = settings_for_simulator(sim, config, database_url=pg_url, schema=schema)
    rt = await open_runtime(settings)
    try:
        await rt.sync_service().backfill(settings.sync.start, None)
        rows = await rt.pool.fetchval("SELECT count(*) FROM rejected_records")
        sightings = await rt.pool.fetchval("SELECT sum(seen) FROM rejected_records")
        assert sightings > rows > 0, "the seed must show a record set aside twice"
        assert rt.counters.rejected == rows
    finally:
        await rt.close()
