"""The event consumer follows the app leases: it claims only events of shops whose app this
process holds at that moment, leaves the others' events for their owner, takes them up when a
lease arrives, and hands back (without spending an attempt) what it claimed just before its
lease went elsewhere. Real Postgres, the simulator over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import pytest

from engine.app.runtime import Observers, Runtime, open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.app.webhooks import build_consumer
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from engine.store.events import EventStore
from engine.sync.events import EventConsumer
from engine.temu.errors import AppNotOwned
from engine.temu.webhooks import ORDER_STATUS, parse_event

SimFactory = Callable[[SimConfig], Awaitable[Simulator]]


@dataclass
class Cluster:
    """What this process holds: apps whose leases it has, and (separately) the apps its
    pacers' send gates still let through."""

    sim: Simulator
    rt: Runtime
    held: set[str]
    sendable: set[str]
    consumer: EventConsumer
    events: EventStore


@pytest.fixture
async def cluster(sim_factory: SimFactory, pg_url: str, schema: str) -> AsyncIterator[Cluster]:
    # Two apps, one shop each: shop-1 on sim-app-1, shop-2 on sim-app-2.
    config = SimConfig.default(orders=60, returns=10, shops=2, apps=2, seed=3)
    sim = await sim_factory(config)
    held: set[str] = {"sim-app-1"}
    sendable: set[str] = {"sim-app-1", "sim-app-2"}

    def gate(app_key: str) -> Callable[[], None]:
        def check() -> None:
            if app_key not in sendable:
                raise AppNotOwned("(lease)", 0, f"app {app_key} is not leased here")

        return check

    settings = settings_for_simulator(sim, config, database_url=pg_url, schema=schema)
    rt = await open_runtime(settings, observers=Observers(send_gate=gate))
    app_of = {s.id: s.app_key for s in settings.shops}
    events = EventStore(rt.pool)
    consumer = build_consumer(
        rt, events, shop_ids=lambda: [s for s, a in app_of.items() if a in held]
    )
    try:
        await rt.sync_service().backfill(settings.sync.start, None)
        yield Cluster(sim, rt, held, sendable, consumer, events)
    finally:
        await rt.close()


async def _store_event(c: Cluster, shop: str, sn: str, update: int) -> None:
    app = c.sim.config.shops[int(shop[-1]) - 1].app_key
    mall = c.sim.webhooks.mall_ids[shop]
    text = f'{{"mallId": {mall}, "parentOrderSn": "{sn}", "updateTime": {update}}}'
    await c.events.insert(parse_event(text, code=ORDER_STATUS, app_key=app), shop)


async def _state(pool: asyncpg.Pool) -> dict[str, tuple[int, str | None]]:
    rows = await pool.fetch("SELECT shop_id, attempts, outcome FROM webhook_events")
    return {r["shop_id"]: (r["attempts"], r["outcome"]) for r in rows}


async def _stored_update(pool: asyncpg.Pool, sn: str) -> int | None:
    value = await pool.fetchval(
        "SELECT (payload->'parentOrderMap'->>'updateTime')::bigint FROM orders "
        "WHERE parent_order_sn = $1",
        sn,
    )
    return None if value is None else int(value)


async def test_events_of_apps_held_elsewhere_wait_for_their_owner(cluster: Cluster) -> None:
    c = cluster
    m1 = c.sim.mutate("shop-1", orders_changed=1)
    m2 = c.sim.mutate("shop-2", orders_changed=1)
    await _store_event(c, "shop-1", m1["orders_changed"][0], m1["now"])
    await _store_event(c, "shop-2", m2["orders_changed"][0], m2["now"])
    requests = c.rt.stats.requests

    assert await c.consumer.run_once() == 1, "only shop-1's event: sim-app-2 is held elsewhere"
    assert await _state(c.rt.pool) == {"shop-1": (1, "read"), "shop-2": (0, None)}
    assert await _stored_update(c.rt.pool, m1["orders_changed"][0]) == m1["now"]
    assert await _stored_update(c.rt.pool, m2["orders_changed"][0]) != m2["now"]
    assert c.rt.stats.requests - requests == 1, "no request on behalf of the other app"

    # This process takes sim-app-2's lease: the waiting event is read at the next claim.
    c.held.add("sim-app-2")
    assert await c.consumer.run_once() == 1
    assert await _state(c.rt.pool) == {"shop-1": (1, "read"), "shop-2": (1, "read")}
    assert await _stored_update(c.rt.pool, m2["orders_changed"][0]) == m2["now"]

    # And gives sim-app-1 up: its new events stay in the table, untouched.
    c.held.discard("sim-app-1")
    m3 = c.sim.mutate("shop-1", orders_changed=1)
    await _store_event(c, "shop-1", m3["orders_changed"][0], m3["now"] + 1)
    assert await c.consumer.run_once() == 0
    pending = await c.rt.pool.fetchval(
        "SELECT attempts FROM webhook_events WHERE processed_at IS NULL"
    )
    assert pending == 0


async def test_a_claim_whose_lease_moved_is_handed_back_unspent(cluster: Cluster) -> None:
    """Claimed while the lease was held, but the pacer's gate refuses the send (the lease
    moved in between): the event goes back to the queue at once, its attempt not counted,
    so the new owner reads it without waiting out a backoff."""
    c = cluster
    m = c.sim.mutate("shop-1", orders_changed=1)
    await _store_event(c, "shop-1", m["orders_changed"][0], m["now"])
    c.sendable.discard("sim-app-1")
    assert await c.consumer.run_once() == 1
    row = await c.rt.pool.fetchrow(
        "SELECT attempts, outcome, claimed_until, next_attempt_at <= now() AS due, last_error "
        "FROM webhook_events"
    )
    assert dict(row) == {
        "attempts": 0,
        "outcome": None,
        "claimed_until": None,
        "due": True,
        "last_error": None,
    }
    c.sendable.add("sim-app-1")
    assert await c.consumer.run_once() == 1
    assert await _state(c.rt.pool) == {"shop-1": (1, "read")}
    assert await _stored_update(c.rt.pool, m["orders_changed"][0]) == m["now"]
