"""Webhooks end to end: the simulator POSTs signed, encrypted events for the changes it makes,
the receiver stores them, the consumer re-reads what changed; real HTTP, real Postgres.

What a seller would notice: a change is in Postgres seconds after Temu sent its event, without
any polling pass; duplicates, retries and forged messages change nothing twice; the re-reads
cost about one request per changed record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from aiohttp import web

from engine.app.runtime import Runtime, open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.daemon.webhooks import create_webhook_app
from engine.sim.config import SimApp, SimConfig, SimShop
from engine.sim.server import Simulator
from engine.store.events import EventStore
from engine.sync.events import ConsumerSettings, EventConsumer, event_shop
from engine.temu.subscriptions import subscribe_shops
from tests.fixtures_sim import SimFactory

SECRET = "5f2b8c0d9e7a41b3a6c4d2e1f0a9b8c7d6e5f4a3"  # Temu's shape: 40 hex characters
EVENTS = [
    "bg_order_status_change_event",
    "bg_aftersales_status_change",
    "bg_cancel_order_status_change",
]
RETRY_SCALE = 0.01  # Temu's first retry after 2 min -> 1.2 s


@dataclass
class World:
    sim: Simulator
    rt: Runtime
    consumer: EventConsumer


@pytest.fixture
async def world(sim_factory: SimFactory, pg_url: str, schema: str) -> AsyncIterator[World]:
    config = SimConfig(
        apps=(SimApp("hooks-app", SECRET, 100),),
        shops=tuple(
            SimShop(f"shop-{i}", "hooks-app", f"tok-{i}", orders=400, returns=80) for i in (1, 2)
        ),
        seed=5,
    )
    sim = await sim_factory(config)
    rt = await open_runtime(settings_for_simulator(sim, config, database_url=pg_url, schema=schema))
    malls = {("hooks-app", mall): shop for shop, mall in sim.webhooks.mall_ids.items()}

    async def shops_for(app_key: str, mall: int | None) -> list[str]:
        shop = malls.get((app_key, mall)) if mall is not None else None
        return [] if shop is None else [shop]

    shops = [event_shop(s.id, rt.shop_apis[s.id], rt.store, rt.counters) for s in rt.settings.shops]
    consumer = EventConsumer(
        events=EventStore(rt.pool), shops=shops, settings=ConsumerSettings(settle_s=0.2, poll_s=60)
    )
    app = create_webhook_app(
        apps={"hooks-app": SECRET},
        shops_for=shops_for,
        events=EVENTS,
        store=EventStore(rt.pool),
        on_stored=consumer.wake,
    )
    runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await rt.sync_service().backfill(rt.settings.sync.start, None)
        results = await subscribe_shops(list(rt.shop_apis.values()), EVENTS)
        assert [r.ok for r in results] == [True, True], results
        sim.webhooks.configure(
            f"http://{host}:{port}/temu/events",
            retry_scale=RETRY_SCALE,
            duplicate_rate=0.3,
            forge_rate=0.3,
            seed=11,
        )
        yield World(sim, rt, consumer)
    finally:
        stop.set()
        consumer.wake()
        await asyncio.wait_for(task, 5)
        await runner.cleanup()
        await rt.close()


async def stored(pool: asyncpg.Pool, table: str, key: str, shop: str) -> dict[str, object]:
    rows = await pool.fetch(f"SELECT {key} AS k, payload FROM {table} WHERE shop_id = $1", shop)
    return {r["k"]: r["payload"] for r in rows}


async def wait_until_stored(w: World, shop: str, orders: list[str], returns: list[str]) -> float:
    """Seconds until every named record is stored exactly as the simulator has it."""
    started = time.monotonic()
    want_o = {o["parentOrderMap"]["parentOrderSn"]: o for o in w.sim.truth_orders(shop)}
    want_r = {r["parentAfterSalesSn"]: r for r in w.sim.truth_returns(shop)}
    while True:
        got_o = await stored(w.rt.pool, "orders", "parent_order_sn", shop)
        got_r = await stored(w.rt.pool, "returns", "parent_after_sales_sn", shop)
        late = [sn for sn in orders if got_o.get(sn) != want_o[sn]]
        late += [sn for sn in returns if got_r.get(sn) != want_r[sn]]
        if not late:
            return time.monotonic() - started
        if time.monotonic() - started > 5:
            raise AssertionError(f"{shop}: {len(late)} change(s) not stored 5 s after the event")
        await asyncio.sleep(0.05)


async def change_rows(pool: asyncpg.Pool, since: int, entity: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT shop_id || '/' || entity_key AS k FROM changes WHERE id > $1 AND entity = $2",
        since,
        entity,
    )
    return [r["k"] for r in rows]


async def test_changes_arrive_by_webhook_once_each(world: World) -> None:
    sim, rt = world.sim, world.rt
    pool = rt.pool
    before = await pool.fetchval("SELECT coalesce(max(id), 0) FROM changes")
    requests_before = rt.stats.requests
    m1 = sim.mutate("shop-1", orders_changed=30, orders_new=5, returns_changed=6, returns_new=3)
    m2 = sim.mutate("shop-2", orders_changed=12, returns_changed=4)
    await wait_until_stored(
        world,
        "shop-1",
        m1["orders_changed"] + m1["orders_new"],
        m1["returns_changed"] + m1["returns_new"],
    )
    await wait_until_stored(world, "shop-2", m2["orders_changed"], m2["returns_changed"])
    await sim.webhooks.drain()
    await asyncio.sleep(0.5)  # duplicates and forged copies have been answered and settled

    orders = {f"shop-1/{sn}" for sn in m1["orders_changed"] + m1["orders_new"]}
    orders |= {f"shop-2/{sn}" for sn in m2["orders_changed"]}
    returns = {f"shop-1/{sn}" for sn in m1["returns_changed"] + m1["returns_new"]}
    returns |= {f"shop-2/{sn}" for sn in m2["returns_changed"]}
    logged_o = await change_rows(pool, before, "order")
    logged_r = await change_rows(pool, before, "return")
    assert sorted(logged_o) == sorted(orders), "each changed order logged exactly once"
    assert sorted(logged_r) == sorted(returns), "each changed return logged exactly once"

    counts = sim.webhooks.counts
    assert counts["duplicates"] > 0 and counts["forged"] > 0, counts
    assert counts["http_401"] == counts["forged"], "every forged message was refused"
    events = await pool.fetchval("SELECT count(*) FROM webhook_events")
    assert events == len(orders) + len(returns), "one stored event per change, duplicates folded"
    assert (
        await pool.fetchval("SELECT count(*) FROM webhook_events WHERE processed_at IS NULL") == 0
    )
    changed = len(orders) + len(returns)
    spent = rt.stats.requests - requests_before
    assert spent <= 1.2 * changed, f"{spent} requests for {changed} changed records"


async def test_a_refused_delivery_is_retried_and_lands_once(world: World) -> None:
    sim, pool = world.sim, world.rt.pool
    before = await pool.fetchval("SELECT coalesce(max(id), 0) FROM changes")
    sim.webhooks.configure(sim.webhooks.url, duplicate_rate=0.0, forge_rate=0.0)
    # The database cannot take events for a moment: the receiver answers 503, Temu retries.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE")
        m = sim.mutate("shop-2", orders_changed=4)
        deadline = time.monotonic() + 20
        while sim.webhooks.counts["http_503"] < 4:  # every event refused at least once
            assert time.monotonic() < deadline, sim.webhooks.counts
            await asyncio.sleep(0.02)
    await wait_until_stored(world, "shop-2", m["orders_changed"], [])
    logged = await change_rows(pool, before, "order")
    assert sorted(logged) == sorted(f"shop-2/{sn}" for sn in m["orders_changed"])


async def test_an_event_the_list_does_not_show_is_retried_then_left_to_polling(
    world: World,
) -> None:
    """(The background consumer polls only every 60 s here, so this test drives it alone.)
    Temu's list may lag its events: the named record must be seen before the event counts
    as done; otherwise it is retried with backoff and finally recorded as not_found."""
    from engine.temu.webhooks import ORDER_STATUS, parse_event

    pool = world.rt.pool
    mall = world.sim.webhooks.mall_ids["shop-1"]
    text = f'{{"mallId": {mall}, "parentOrderSn": "PO-nowhere", "updateTime": {int(time.time())}}}'
    events = EventStore(pool)
    await events.insert(parse_event(text, code=ORDER_STATUS, app_key="hooks-app"), "shop-1")
    outcomes = []
    for _ in range(3):
        await pool.execute("UPDATE webhook_events SET next_attempt_at = now()")
        await world.consumer.run_once()
        outcomes.append(await pool.fetchrow("SELECT attempts, outcome FROM webhook_events"))
    assert [(r["attempts"], r["outcome"]) for r in outcomes] == [
        (1, None),
        (2, None),
        (3, "not_found"),
    ]
