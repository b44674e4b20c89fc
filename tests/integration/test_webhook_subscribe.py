"""bg.tmc.message.update against the simulator: spacing, and the three refusals in words."""

from __future__ import annotations

import asyncio
import time

from engine.app.runtime import open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.sim.config import SimConfig
from engine.temu.subscriptions import subscribe_shops
from tests.fixtures_sim import SimFactory

EVENTS = ["bg_order_status_change_event", "bg_aftersales_status_change"]


async def test_subscribe_spaces_calls_and_explains_refusals(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    config = SimConfig.default(orders=10, returns=2, shops=3)
    sim = await sim_factory(config)
    sim.webhooks.denied_tokens.add("sim-token-shop-2")
    rt = await open_runtime(settings_for_simulator(sim, config, database_url=pg_url, schema=schema))
    try:
        started = time.monotonic()
        results = await subscribe_shops(list(rt.shop_apis.values()), EVENTS)
        elapsed = time.monotonic() - started
        assert [r.ok for r in results] == [True, False, True]
        assert "110020008" in results[1].message
        assert "Seller Center" in results[1].message
        # Three calls of one app, one second apart, and none refused for going too fast.
        assert elapsed >= 2.0
        assert sim.webhooks.subscriptions["shop-1"] == set(EVENTS)
        assert (
            "shop-2" not in sim.webhooks.subscriptions or not sim.webhooks.subscriptions["shop-2"]
        )

        sim.webhooks.approved.discard("bg_aftersales_status_change")
        [r] = await subscribe_shops([rt.shop_apis["shop-3"]], EVENTS)
        assert not r.ok and "110020009" in r.message and "Partner Platform" in r.message

        # Called too fast (another process just called): the answer is 110020007, in words.
        api = rt.shop_apis["shop-1"]
        await asyncio.sleep(1.1)
        await api.update_event_subscription(permit=EVENTS[:1])
        try:
            await api.update_event_subscription(permit=EVENTS[:1])
        except Exception as exc:
            assert "110020007" in str(exc) and "1 request per second" in str(exc)
        else:
            raise AssertionError("a second call within a second must be refused")
    finally:
        await rt.close()


async def test_the_subscribe_command_reports_each_shop_and_exits_3_on_a_refusal(
    sim_factory: SimFactory, pg_url: str, schema: str, capsys: object
) -> None:
    from dataclasses import replace

    import pytest

    from engine.cli.webhooks import cmd_webhooks_subscribe

    config = SimConfig.default(orders=10, returns=2, shops=2)
    sim = await sim_factory(config)
    sim.webhooks.denied_tokens.add("sim-token-shop-2")
    settings = settings_for_simulator(sim, config, database_url=pg_url, schema=schema)
    settings = replace(settings, webhooks=replace(settings.webhooks, events=tuple(EVENTS)))
    assert isinstance(capsys, pytest.CaptureFixture)
    assert await cmd_webhooks_subscribe(settings, None) == 3
    out = capsys.readouterr().out
    assert f"shop-1: subscribed: {', '.join(sorted(EVENTS))}\n" in out, out  # said once
    assert "shop-2: refused" in out and "110020008" in out
    assert sim.webhooks.subscriptions["shop-1"] == set(EVENTS)
    assert await cmd_webhooks_subscribe(settings, ["shop-1"]) == 0
