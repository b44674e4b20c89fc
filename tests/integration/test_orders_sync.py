"""Orders end to end: the simulator over real HTTP, the engine, a real Postgres.

What a seller would check: every order and line is there with the payload Temu sent, changes
are picked up and logged exactly once, a pass with nothing new writes nothing, and records that
move while a window is paged are never lost.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from engine.app.runtime import Runtime, open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from tests.fixtures_sim import SimFactory, past_the_lag

LAG_S = 1  # sync.safety_lag_s of settings_for_simulator

QPS = 100  # the simulator enforces it like Temu; tests run faster than the real limit


async def stored_orders(pool: asyncpg.Pool, shop: str) -> dict[str, Any]:
    rows = await pool.fetch("SELECT parent_order_sn, payload FROM orders WHERE shop_id = $1", shop)
    return {r["parent_order_sn"]: r["payload"] for r in rows}


async def stored_lines(pool: asyncpg.Pool, shop: str) -> dict[str, Any]:
    rows = await pool.fetch("SELECT order_sn, payload FROM order_lines WHERE shop_id = $1", shop)
    return {r["order_sn"]: r["payload"] for r in rows}


def truth_orders(sim: Simulator, shop: str) -> dict[str, Any]:
    return {o["parentOrderMap"]["parentOrderSn"]: o for o in sim.truth_orders(shop)}


def truth_lines(sim: Simulator, shop: str) -> dict[str, Any]:
    return {line["orderSn"]: line for o in sim.truth_orders(shop) for line in o["orderList"]}


async def assert_equal_to_truth(rt: Runtime, sim: Simulator, shops: list[str]) -> None:
    for shop in shops:
        want = truth_orders(sim, shop)
        got = await stored_orders(rt.pool, shop)
        assert set(got) == set(want), (
            f"{shop}: missing {len(set(want) - set(got))}, extra {len(set(got) - set(want))}"
        )
        diff = [sn for sn in want if got[sn] != want[sn]]
        assert not diff, f"{shop}: {len(diff)} payloads differ, e.g. {diff[:3]}"
        assert await stored_lines(rt.pool, shop) == truth_lines(sim, shop)


@contextlib.asynccontextmanager
async def _orders_only(
    sim_factory: SimFactory, config: SimConfig, pg_url: str, schema: str
) -> AsyncIterator[tuple[Simulator, Runtime]]:
    """A simulator and a runtime syncing its orders only (returns off)."""
    sim = await sim_factory(config)
    settings = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, sync={"returns": False}
    )
    rt = await open_runtime(settings)
    try:
        yield sim, rt
    finally:
        await rt.close()


@pytest.fixture
async def world(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> AsyncIterator[tuple[Simulator, Runtime]]:
    config = SimConfig.default(orders=10_000, returns=0, shops=2, qps=QPS, seed=42)
    async with _orders_only(sim_factory, config, pg_url, schema) as pair:
        yield pair


async def test_backfill_then_changes_then_nothing(world: tuple[Simulator, Runtime]) -> None:
    sim, rt = world
    shops = ["shop-1", "shop-2"]
    service = rt.sync_service()

    result = await service.backfill(rt.settings.sync.start, None)
    assert not result.failed
    await assert_equal_to_truth(rt, sim, shops)
    assert rt.counters.entity("order").inserted == 20_000
    # Every page was full but the last of each window: the limit was not wasted.
    stats = sim.stats(arrivals=False)["apps"]["sim-app-1"]
    assert stats["max_accepted_in_1s"] <= QPS
    # The simulator's limiter caps what it accepts; what shows pacing is that nothing was
    # refused for going too fast.
    assert stats["rejected_rate_limit"] == 0, stats["rejected_rate_limit"]
    assert rt.stats.requests <= 20_000 / 100 * 1.1

    # 1% of the orders change and 25 new ones arrive in each shop.
    changes_before = await rt.pool.fetchval("SELECT max(id) FROM changes")
    mutated: set[str] = set()
    for shop in shops:
        m = sim.mutate(shop, orders_changed=100, orders_new=25)
        mutated |= {f"{shop}/{sn}" for sn in m["orders_changed"] + m["orders_new"]}
    rt.counters.rows.clear()
    result = await rt.sync_service(clock=past_the_lag(LAG_S)).incremental_pass()
    assert not result.failed
    await assert_equal_to_truth(rt, sim, shops)
    assert rt.counters.entity("order").inserted == 50
    assert rt.counters.entity("order").updated == 200
    logged = await rt.pool.fetch(
        "SELECT shop_id, entity_key, op FROM changes WHERE id > $1 AND entity = 'order'",
        changes_before,
    )
    assert {f"{r['shop_id']}/{r['entity_key']}" for r in logged} == mutated
    assert len(logged) == len(mutated), "each change is logged exactly once"

    # A pass with nothing new: no row version, no change record.
    xmins = await rt.pool.fetchval("SELECT sum(xmin::text::bigint) FROM orders")
    changes_now = await rt.pool.fetchval("SELECT count(*) FROM changes")
    rt.counters.rows.clear()
    await rt.sync_service(clock=past_the_lag(LAG_S)).incremental_pass()
    assert rt.counters.entity("order").inserted == 0
    assert rt.counters.entity("order").updated == 0
    assert await rt.pool.fetchval("SELECT sum(xmin::text::bigint) FROM orders") == xmins
    assert await rt.pool.fetchval("SELECT count(*) FROM changes") == changes_now


async def test_drift_while_paging_loses_nothing(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    config = SimConfig.default(orders=6_000, returns=0, shops=1, qps=QPS, seed=7, drift_rate=0.2)
    sim = await sim_factory(config)
    settings = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, sync={"returns": False}
    )
    rt = await open_runtime(settings)
    try:
        await rt.sync_service().backfill(settings.sync.start, None)
        drifted = sim.stats(arrivals=False)["drift_events"]
        assert drifted > 5, "the simulator should have moved records during paging"
        assert rt.counters.drift_events > 0, "the engine should have noticed"
        # Records moved to "now" are picked up by the next incremental pass.
        sim.set_drift(0.0)
        await rt.sync_service(clock=past_the_lag(LAG_S)).incremental_pass()
        await assert_equal_to_truth(rt, sim, ["shop-1"])
    finally:
        await rt.close()


@pytest.fixture
async def small_world(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> AsyncIterator[tuple[Simulator, Runtime]]:
    """For what a bound or a cursor proves: a few pages, not 20,000 orders."""
    config = SimConfig.default(orders=300, returns=0, shops=1, qps=400, seed=42)
    async with _orders_only(sim_factory, config, pg_url, schema) as pair:
        yield pair


async def test_backfill_until_the_future_stops_at_the_safety_lag(
    small_world: tuple[Simulator, Runtime],
) -> None:
    """An --until later than now - safety_lag_s must not carry the backfill's cursor over
    windows Temu may still add records to; a re-run of the same backfill resumes there."""
    import time
    from datetime import UTC, datetime, timedelta

    from engine.sync.service import backfill_kind

    sim, rt = small_world
    since = rt.settings.sync.start
    until = datetime.now(UTC) + timedelta(days=1)
    result = await rt.sync_service().backfill(since, until, shop_ids=["shop-1"])
    assert not result.failed
    kind = backfill_kind(int(since.timestamp()), int(until.timestamp()))
    cursor = await rt.store.get_cursor("shop-1", "orders", kind)
    assert cursor is not None
    assert cursor.timestamp() <= time.time() - rt.settings.sync.safety_lag_s

    # An order updated after that backfill is still inside its [since, until] range: the
    # re-run picks it up instead of treating the range as done.
    # (Stamped no earlier than the second the backfill's cursor ends before.)
    sn = sim.mutate("shop-1", orders_new=1)["orders_new"][0]
    await rt.sync_service(clock=past_the_lag(LAG_S)).backfill(since, until, shop_ids=["shop-1"])
    stored = await stored_orders(rt.pool, "shop-1")
    assert stored[sn] == truth_orders(sim, "shop-1")[sn]


async def test_a_backfill_to_now_hands_over_to_the_incremental_cursor(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    """README: a backfill that reaches now hands over to the incremental cursor. With no
    overlap, the first incremental pass then reads only what changed after the backfill's end:
    nothing of the history again, and nothing of the new changes missed."""
    import time

    config = SimConfig.default(orders=400, returns=0, shops=1, qps=QPS, seed=5)
    sim = await sim_factory(config)
    settings = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, sync={"returns": False, "overlap_s": 0}
    )
    rt = await open_runtime(settings)
    try:
        t0 = time.time()
        assert not (
            await rt.sync_service(clock=lambda: t0).backfill(settings.sync.start, None)
        ).failed
        handed = await rt.store.get_cursor("shop-1", "orders", "incremental")
        assert handed is not None and int(handed.timestamp()) == int(t0) - 1
        # Changes right after the backfill's end, seen by a pass whose clock is 5 s later.
        sim.world.clock = lambda: float(int(t0))
        try:
            changed = sim.mutate("shop-1", orders_changed=4, orders_new=3)
        finally:
            sim.world.clock = time.time
        before = rt.counters.entity("order").as_dict()
        assert not (await rt.sync_service(clock=lambda: t0 + 5).incremental_pass()).failed
        after = rt.counters.entity("order").as_dict()
        read = {k: after[k] - before[k] for k in after}
        assert read == {"inserted": 3, "updated": 4, "unchanged": 0}, (read, changed)
        await assert_equal_to_truth(rt, sim, ["shop-1"])
    finally:
        await rt.close()
