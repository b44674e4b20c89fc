"""A gateway that counts refused requests in its window too (sim ``count_refused``): an engine
configured above the app's real limit must still converge under it instead of keeping the
window full with its own retries, and lose nothing on the way."""

from __future__ import annotations

from dataclasses import replace

from engine.app.runtime import open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.sim.config import SimConfig
from tests.fixtures_sim import SimFactory

REAL_QPS = 5


async def test_an_engine_paced_too_fast_converges_when_refusals_count(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    config = SimConfig.default(
        orders=2500, returns=0, shops=2, qps=REAL_QPS, seed=9, count_refused=True
    )
    sim = await sim_factory(config)
    settings = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, sync={"returns": False}
    )
    # The operator wrote qps = 15 for an app Temu holds at 5.
    settings = replace(settings, apps=tuple(replace(a, qps=3.0 * REAL_QPS) for a in settings.apps))
    rt = await open_runtime(settings)
    try:
        result = await rt.sync_service().backfill(settings.sync.start, None)
        stored = await rt.pool.fetchval("SELECT count(*) FROM orders")
    finally:
        await rt.close()
    assert not result.failed
    assert stored == 2 * 2500
    app = sim.stats()["apps"]["sim-app-1"]
    accepted, refused = app["accepted_at"], app["rejected_at"]
    assert refused, "the engine never went over: the test proves nothing"
    # Every refusal costs a full second here, so the pace must get under the real limit in
    # seconds (the step doubles while overshoots repeat) ...
    first = min(accepted[0], refused[0])
    assert max(refused) - first < 12.0, (len(refused), max(refused) - first)
    # ... and stay there, without collapsing: the rest of the run goes unrefused near the limit.
    tail = [t for t in accepted if t > max(refused)]
    assert len(tail) >= 20, len(tail)
    assert len(tail) / (tail[-1] - tail[0]) > 0.6 * REAL_QPS
