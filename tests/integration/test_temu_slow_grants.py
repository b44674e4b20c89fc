"""A Temu that stalls and then answers everything at once must not get a burst: a pacer grant
is taken only with a connection in hand (TemuTransport's connection slots), so grants never
queue behind a full connector and leave together when it drains. Counted at the simulator,
refused arrivals included."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench.measures import sliding_window_max
from engine.app.sim_settings import settings_for_simulator
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from engine.temu.limiter import AppPacer, Lane
from engine.temu.stats import CallStats
from engine.temu.transport import TemuTransport

SimFactory = Callable[[SimConfig], Awaitable[Simulator]]
CONNECTIONS = 30  # more than the limit: a stalled Temu holds them all
QPS = 20


async def _stalled_then_released(
    sim: Simulator, config: SimConfig, *, slots: bool
) -> dict[str, Any]:
    """``slots=False`` shows the burst the slots prevent (seen: 30 sends refused with 4000004
    when the stalled answers drained the connector at once)."""
    settings = settings_for_simulator(sim, config, database_url="", schema="unused")
    app, shop = settings.apps[0], settings.shops[0]
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        transport = TemuTransport(
            session,
            app,
            AppPacer(QPS),
            CallStats(),
            connection_slots=asyncio.Semaphore(CONNECTIONS) if slots else None,
        )
        sim.network.hold_answers()

        async def one() -> None:
            await transport.call(
                "bg.order.list.v2.get",
                shop.access_token.get(),
                {"pageNumber": 1, "pageSize": 10},
                lane=Lane.INCREMENTAL,
            )

        calls = [asyncio.ensure_future(one()) for _ in range(80)]
        async with asyncio.timeout(30):
            # Every connection is now stuck at Temu (polling a simulator counter).
            while sim.network.answers_held < CONNECTIONS:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)  # meanwhile, the pacer would keep granting
        sim.network.release_answers()
        async with asyncio.timeout(60):
            await asyncio.gather(*calls)
    stats: dict[str, Any] = sim.stats()["apps"][app.app_key]
    return stats


async def test_a_stalled_temu_never_gets_a_burst(sim_factory: SimFactory) -> None:
    config = SimConfig.default(orders=20, returns=0, shops=1, qps=QPS, seed=5)
    sim = await sim_factory(config)
    stats = await _stalled_then_released(sim, config, slots=True)
    arrivals = stats["accepted_at"] + stats["rejected_at"]
    assert len(stats["accepted_at"]) == 80
    assert stats["rejected_rate_limit"] == 0, "Temu refused sends with 4000004"
    assert sliding_window_max(arrivals) <= QPS
