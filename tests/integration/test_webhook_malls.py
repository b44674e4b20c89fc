"""The receiver's mallId map in a daemon that just started: a shop's mallId is learned from its
first token check, which comes with its first pass, AFTER the receiver is up. An event that
arrives in between must not be acknowledged and dropped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from engine.app.runtime import open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.app.webhooks import MallMap, MallNotKnownYet
from engine.sim.config import SimConfig
from engine.sim.server import Simulator

SimFactory = Callable[[SimConfig], Awaitable[Simulator]]


async def test_unknown_mall_waits_for_the_first_token_checks(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    config = SimConfig.default(orders=20, returns=5, shops=2, apps=1, seed=8)
    sim = await sim_factory(config)
    settings = settings_for_simulator(sim, config, database_url=pg_url, schema=schema)
    rt = await open_runtime(settings)
    try:
        malls = MallMap(rt, every_s=3600, miss_refresh_s=0.0)
        await malls.refresh()  # at daemon start: no shop checked yet
        mall_1 = sim.webhooks.mall_ids["shop-1"]
        with pytest.raises(MallNotKnownYet):
            await malls("sim-app-1", mall_1)  # Temu is answered 503 and delivers it again
        with pytest.raises(MallNotKnownYet):
            await malls("sim-app-1", 999)  # might be either shop: not dropped either

        await rt.sync_service().incremental_pass()  # each shop's token check, with its mallId
        # Found by the refresh a miss triggers, not by the minute-long background round.
        assert await malls("sim-app-1", mall_1) == "shop-1"
        assert await malls("sim-app-1", sim.webhooks.mall_ids["shop-2"]) == "shop-2"
        # Every shop of the app is known now: another mallId is truly not ours.
        assert await malls("sim-app-1", 999) is None
        assert await malls("other-app", mall_1) is None
    finally:
        await rt.close()
