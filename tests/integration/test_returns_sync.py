"""Returns end to end: parent returns, their lines and logistics, and the normalized view."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.app.runtime import Runtime, open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from tests.fixtures_sim import SimFactory, past_the_lag
from tests.truth import truth_differences

LAG_S = 1  # sync.safety_lag_s of settings_for_simulator

SHOPS = ["shop-1", "shop-2"]
LIST_TYPE = "bg.aftersales.parentaftersales.list.get"

NORMALIZED = {
    1: "requested",
    10: "requested",
    11: "requested",
    2: "approved",
    3: "approved",
    4: "approved",
    8: "approved",
    9: "approved",
    5: "closed",
    6: "cancelled",
    7: "rejected",
}


async def assert_returns_equal_truth(rt: Runtime, sim: Simulator) -> None:
    """Returns, their lines and their logistics equal the simulator's (tests/truth.py)."""
    async with rt.pool.acquire() as conn:
        schema = rt.settings.database.schema
        assert await truth_differences(conn, schema, sim, streams=["returns"], shops=SHOPS) == []


def list_calls(sim: Simulator) -> dict[str, int]:
    by_type: dict[str, int] = sim.stats(arrivals=False)["apps"]["sim-app-1"]["by_type"]
    return dict(by_type)


@pytest.fixture
async def world(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> AsyncIterator[tuple[Simulator, Runtime]]:
    config = SimConfig.default(orders=300, returns=600, shops=2, qps=100, seed=9)
    sim = await sim_factory(config)
    settings = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, sync={"orders": False}
    )
    rt = await open_runtime(settings)
    try:
        yield sim, rt
    finally:
        await rt.close()


async def test_returns_backfill_changes_and_quiet_pass(world: tuple[Simulator, Runtime]) -> None:
    sim, rt = world
    service = rt.sync_service()
    result = await service.backfill(rt.settings.sync.start, None)
    assert not result.failed
    await assert_returns_equal_truth(rt, sim)
    assert rt.counters.entity("return").inserted == 1200

    for shop in SHOPS:
        sim.mutate(shop, returns_changed=20, returns_new=5)
    rt.counters.rows.clear()
    await rt.sync_service(clock=past_the_lag(LAG_S)).incremental_pass()
    await assert_returns_equal_truth(rt, sim)
    assert rt.counters.entity("return").inserted == 10
    assert rt.counters.entity("return").updated == 40

    # Nothing changed: only the list API is called, nothing is written.
    before = list_calls(sim)
    rt.counters.rows.clear()
    await rt.sync_service(clock=past_the_lag(LAG_S)).incremental_pass()
    after = list_calls(sim)
    spent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert {k for k, v in spent.items() if v} == {LIST_TYPE}
    assert rt.counters.entity("return").inserted == rt.counters.entity("return").updated == 0


async def test_a_lines_list_with_a_smaller_page_limit_still_gives_every_line(
    world: tuple[Simulator, Runtime],
) -> None:
    """temu-api.md gives the child lines list no pageSize maximum. One that refuses 200 (3000000,
    not retried) must not fail every returns page needing lines: the size comes down."""
    sim, rt = world
    sim.set_modes(lines_max_page_size=30)
    result = await rt.sync_service().backfill(rt.settings.sync.start, None)
    assert not result.failed, result.failed
    await assert_returns_equal_truth(rt, sim)
    refused = sim.stats(arrivals=False)["apps"]["sim-app-1"]["errors"]
    assert refused.get("3000000", refused.get(3000000, 0)) > 0, refused


async def test_a_return_whose_key_holds_u0000_is_stored_with_its_lines_and_logistics(
    world: tuple[Simulator, Runtime],
) -> None:
    """interface.md: a string Postgres refuses is stored as close as it allows (U+FFFD for
    U+0000). The key is asked of Temu as Temu sent it (lines, reverse logistics) and compared
    with the stored rows as Postgres holds it."""
    sim, rt = world
    table = sim.world.shop("shop-1").returns
    rec = next(r for r in table.records if r.lines and r.logistics)
    del table.by_sn[rec.sn]
    rec.sn = rec.sn[:6] + "\u0000" + rec.sn[6:]
    table.by_sn[rec.sn] = rec
    for line in rec.lines:
        line["parentAfterSalesSn"] = rec.sn
    stored_key = rec.sn.replace("\u0000", "\ufffd")
    result = await rt.sync_service().backfill(rt.settings.sync.start, None)
    assert not result.failed, result.failed
    async with rt.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM return_lines WHERE parent_after_sales_sn = $1) AS lines,"
            " (SELECT count(*) FROM return_logistics WHERE parent_after_sales_sn = $1) AS logi,"
            " (SELECT count(*) FROM returns WHERE parent_after_sales_sn = $1) AS ret",
            stored_key,
        )
    assert (row["ret"], row["lines"], row["logi"]) == (1, len(rec.lines), 1), dict(row)
    pending = await rt.pool.fetchval("SELECT count(*) FROM logistics_pending")
    assert pending == 0


async def test_every_status_maps_in_the_view(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    # A mapping, not a volume: 60 returns a shop already hold every status (the generator
    # makes sure of it), and pacing is not under test.
    config = SimConfig.default(orders=50, returns=60, shops=2, qps=400, seed=9)
    sim = await sim_factory(config)
    settings = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, sync={"orders": False}
    )
    rt = await open_runtime(settings)
    try:
        await _check_the_view(sim, rt)
    finally:
        await rt.close()


async def _check_the_view(sim: Simulator, rt: Runtime) -> None:
    await rt.sync_service().backfill(rt.settings.sync.start, None)
    rows = await rt.pool.fetch("SELECT DISTINCT temu_status, status FROM returns_normalized")
    seen = {r["temu_status"]: r["status"] for r in rows}
    assert set(seen) == set(NORMALIZED), "the simulator should produce every status 1..11"
    assert seen == NORMALIZED
    awaited = await rt.pool.fetchval("SELECT count(*) FROM returns_normalized WHERE label_awaited")
    truth = sum(
        1
        for shop in SHOPS
        for r in sim.truth_returns(shop)
        if r["parentAfterSalesStatus"] == 8 and 10 in (r.get("availableOperateList") or [])
    )
    assert awaited == truth > 0
    tracked: Any = await rt.pool.fetchval(
        "SELECT count(*) FROM returns_normalized WHERE tracking_number IS NOT NULL"
    )
    assert tracked > 0, "returns on their way expose the return fulfillment's tracking"


async def test_returns_drift_loses_nothing(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    config = SimConfig.default(orders=100, returns=800, shops=2, qps=100, seed=5, drift_rate=0.2)
    sim = await sim_factory(config)
    settings = settings_for_simulator(
        sim,
        config,
        database_url=pg_url,
        schema=schema,
        sync={"orders": False, "returns_page_size": 50},
    )
    rt = await open_runtime(settings)
    try:
        await rt.sync_service().backfill(settings.sync.start, None)
        assert sim.stats(arrivals=False)["drift_events"] > 0
        sim.set_drift(0.0)
        await rt.sync_service(clock=past_the_lag(LAG_S)).incremental_pass()
        await assert_returns_equal_truth(rt, sim)
    finally:
        await rt.close()


async def test_logistics_not_read_are_read_again_at_the_next_pass(
    world: tuple[Simulator, Runtime],
) -> None:
    """Issue 12: parentreturnorder.get answering 130010004 once must not leave a return without
    logistics until the return changes again: the next pass reads them again."""
    sim, rt = world
    sim.set_modes(logistics_not_ready=25)
    service = rt.sync_service()
    result = await service.backfill(rt.settings.sync.start, None)
    assert not result.failed
    pending = await rt.store.logistics_pending()
    assert 0 < pending <= 25
    before = await rt.pool.fetchval("SELECT count(*) FROM return_logistics")

    # No return changed meanwhile; the pass runs with a clock past the safety lag.
    result = await rt.sync_service(clock=past_the_lag(LAG_S)).incremental_pass()
    assert not result.failed
    assert await rt.store.logistics_pending() == 0
    assert await rt.pool.fetchval("SELECT count(*) FROM return_logistics") == before + pending
    await assert_returns_equal_truth(rt, sim)
    # The reconciler hears of the tracking numbers read late: a change of their return.
    late = await rt.pool.fetchval(
        "SELECT count(*) FROM changes WHERE changed_fields = ARRAY['logisticsInfoList']"
    )
    assert late > 0
