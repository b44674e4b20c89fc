"""The receiver's mallId map in a daemon that just started: a shop's mallId is learned from its
first token check, which comes with its first pass, AFTER the receiver is up. An event that
arrives in between must not be acknowledged and dropped; but once every shop of the app has
been tried (a revoked token's check is refused and never yields a mallId), an unknown mallId
is acknowledged (200), so Temu stops retrying it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from engine.app.runtime import Runtime, open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.app.webhooks import MallMap, MallNotKnownYet
from engine.daemon.metrics import Metrics
from engine.daemon.webhooks import create_webhook_app
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from engine.store.events import EventStore
from engine.temu import webhooks as wh
from tests.integration.test_webhook_receiver import message, post, serving, signed
from tests.silent_pg import SilentPostgres

SimFactory = Callable[[SimConfig], Awaitable[Simulator]]


async def _world(
    sim_factory: SimFactory, config: SimConfig, pg_url: str, schema: str
) -> tuple[Simulator, Runtime]:
    """A simulator for ``config`` and an open runtime on it (the caller closes it)."""
    sim = await sim_factory(config)
    settings = settings_for_simulator(sim, config, database_url=pg_url, schema=schema)
    return sim, await open_runtime(settings)


async def test_unknown_mall_waits_for_the_first_token_checks(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    config = SimConfig.default(orders=20, returns=5, shops=2, apps=1, seed=8)
    sim, rt = await _world(sim_factory, config, pg_url, schema)
    try:
        malls = MallMap(rt, every_s=3600, miss_refresh_s=0.0)
        await malls.refresh()  # at daemon start: no shop checked yet
        mall_1 = sim.webhooks.mall_ids["shop-1"]
        with pytest.raises(MallNotKnownYet):
            await malls("sim-app-1", mall_1)  # Temu is answered 503 and delivers it again
        with pytest.raises(MallNotKnownYet):
            await malls("sim-app-1", 999)  # might be either shop: not dropped either
        # Without a mallId it cannot be told at all: a re-read hint for each shop of the app.
        assert await malls("sim-app-1", None) == ["shop-1", "shop-2"]

        await rt.sync_service().incremental_pass()  # each shop's token check, with its mallId
        # Found by the refresh a miss triggers, not by the minute-long background round.
        assert await malls("sim-app-1", mall_1) == ["shop-1"]
        assert await malls("sim-app-1", sim.webhooks.mall_ids["shop-2"]) == ["shop-2"]
        # Every shop of the app is known now: another mallId is truly not ours.
        assert await malls("sim-app-1", 999) == []
        assert await malls("other-app", mall_1) == []
    finally:
        await rt.close()


@asynccontextmanager
async def receiver(rt: Runtime, malls: MallMap, metrics: Metrics) -> AsyncIterator[str]:
    """The daemon's receiver, as webhook_service assembles it, on a free port: its URL."""
    app = create_webhook_app(
        apps={a.app_key: a.app_secret.get() for a in rt.settings.apps},
        shops_for=malls,
        events=[wh.ORDER_STATUS],
        store=EventStore(rt.pool),
        observer=metrics,
    )
    async with serving(app) as url:
        yield url


def counted(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "temu_sync_webhook_events_total", {"code": wh.ORDER_STATUS, "outcome": outcome}
    )
    return value or 0.0


async def test_an_unknown_mall_is_acknowledged_once_a_revoked_shop_was_tried(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    config = SimConfig.default(orders=20, returns=5, shops=2, apps=1, seed=8)
    sim, rt = await _world(sim_factory, config, pg_url, schema)
    metrics = Metrics()
    try:
        assert sim.revoke_token(config.shops[1].access_token)  # shop-2's seller revoked it
        secret = rt.settings.apps[0].app_secret.get()
        malls = MallMap(rt, every_s=3600, miss_refresh_s=0.0)
        await malls.refresh()

        def event(mall: int) -> tuple[dict[str, str], bytes]:
            order = {"mallId": mall, "parentOrderSn": "PO-X", "updateTime": 1_760_000_000}
            return message(order, secret=secret, app_key="sim-app-1")

        async with receiver(rt, malls, metrics) as url:
            # Start-up: neither shop tried, 999 may be either: Temu must deliver it again.
            assert await post(url, *event(999)) == 503
            assert counted(metrics, "mall_not_yet") == 1

            # The first pass: shop-1's check answers, shop-2's is refused (revoked token).
            await rt.sync_service().incremental_pass()
            assert await post(url, *event(999)) == 200
            assert counted(metrics, "unknown_mall") == 1
            # shop-2's own mallId cannot be told from any other until its token works again.
            assert await post(url, *event(sim.webhooks.mall_ids["shop-2"])) == 200
            assert counted(metrics, "unknown_mall") == 2
            assert await rt.pool.fetchval("SELECT count(*) FROM webhook_events") == 0
            assert await post(url, *event(sim.webhooks.mall_ids["shop-1"])) == 200
            assert await rt.pool.fetchval("SELECT shop_id FROM webhook_events") == "shop-1"

            # A refusal of shop-2's previous token says nothing of the one config.toml holds.
            await rt.pool.execute("UPDATE token_check_failures SET token_sha256 = 'old'")
            assert await post(url, *event(999)) == 503
            assert counted(metrics, "mall_not_yet") == 2
        assert counted(metrics, "stored") == 1
    finally:
        await rt.close()


async def test_an_event_of_an_unforeseen_shape_is_a_re_read_hint_for_a_single_shop_app(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    """temu-webhooks.md: unknown fields and shapes are a hint for a wider re-read (the shop's
    recent window), never an error. An event without a mallId, or whose payload is not even
    an object, belongs to its app's only shop when the app has one: stored for it, with no
    identifiers (the consumer then re-reads that shop's recent window)."""
    config = SimConfig.default(orders=20, returns=5, shops=2, apps=2, seed=8)
    _, rt = await _world(sim_factory, config, pg_url, schema)
    metrics = Metrics()
    try:
        assert {s.id: s.app_key for s in rt.settings.shops} == {
            "shop-1": "sim-app-1",
            "shop-2": "sim-app-2",
        }
        secret = rt.settings.apps[0].app_secret.get()
        malls = MallMap(rt, every_s=3600, miss_refresh_s=0.0)
        async with receiver(rt, malls, metrics) as url:
            no_mall = message({"parentOrderSn": "PO-X"}, secret=secret, app_key="sim-app-1")
            assert await post(url, *no_mall) == 200
            # Decrypts and parses, but is not an object.
            odd = signed("[1, 2]", secret=secret, app_key="sim-app-1")
            assert await post(url, *odd) == 200
        rows = await rt.pool.fetch(
            "SELECT shop_id, parent_order_sn, update_time FROM webhook_events ORDER BY id"
        )
        assert [(r["shop_id"], r["parent_order_sn"]) for r in rows] == [
            ("shop-1", "PO-X"),
            ("shop-1", None),
        ]
        assert counted(metrics, "stored") == 2
    finally:
        await rt.close()


async def test_a_map_that_cannot_load_acknowledges_no_mall(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    """The daemon's first load of the map failed (Postgres silent at start-up) and so does the
    refresh an unknown mallId triggers: nothing is known to have been tried, so no event may
    be answered 200 and dropped as someone else's."""
    config = SimConfig.default(orders=20, returns=5, shops=2, apps=1, seed=8)
    async with SilentPostgres(pg_url).running() as silent:
        _, rt = await _world(sim_factory, config, silent.url, schema)
        try:
            await rt.sync_service().incremental_pass()  # the shops' mallIds are in Postgres
            malls = MallMap(rt, every_s=3600, miss_refresh_s=0.0)
            silent.freeze()
            with pytest.raises(MallNotKnownYet):
                await malls("sim-app-1", 999)  # Temu gets 503 and delivers it again
            silent.thaw()
            assert await malls("sim-app-1", 999) == []  # loaded: truly no shop's
        finally:
            silent.thaw()
            await rt.close()
