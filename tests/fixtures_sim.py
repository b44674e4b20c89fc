"""Simulator fixtures: a real simulator on 127.0.0.1 with an ephemeral port, stopped after use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from engine.sim import SimConfig, Simulator
from engine.temu.signing import signed_body

SimFactory = Callable[[SimConfig], Awaitable[Simulator]]


@pytest.fixture
async def sim_factory() -> AsyncIterator[SimFactory]:
    started: list[Simulator] = []

    async def make(config: SimConfig) -> Simulator:
        sim = Simulator(config)
        await sim.start("127.0.0.1", 0)
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()


@pytest.fixture
async def sim(sim_factory: SimFactory) -> Simulator:
    """Two shops on one app, 300 orders and 60 returns each."""
    return await sim_factory(SimConfig.default(orders=300, returns=60, shops=2))


class TemuCaller:
    """A bare-bones Temu caller for tests: signs with the client's signer, posts, decodes."""

    def __init__(self, session: aiohttp.ClientSession, sim: Simulator) -> None:
        self.session = session
        self.sim = sim

    def params(self, api_type: str, shop: int = 0, **api: Any) -> dict[str, Any]:
        config = self.sim.config
        shop_cfg = config.shops[shop]
        return {
            "type": api_type,
            "app_key": shop_cfg.app_key,
            "access_token": shop_cfg.access_token,
            "timestamp": int(time.time()),
            "data_type": "JSON",
            **api,
        }

    def secret(self, app_key: str) -> str:
        return next(a.app_secret for a in self.sim.config.apps if a.app_key == app_key)

    async def post(self, params: dict[str, Any], *, secret: str | None = None) -> dict[str, Any]:
        body = signed_body(params, secret or self.secret(params["app_key"]))
        return await self.raw(body)

    async def raw(self, body: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        async with self.session.post(self.sim.temu_url, data=body, headers=headers) as resp:
            assert resp.status == 200
            result: dict[str, Any] = orjson.loads(await resp.read())
            return result

    async def call(self, api_type: str, shop: int = 0, **api: Any) -> dict[str, Any]:
        """Calls and, like any polite client, waits out the app's rate limit (4000004)."""
        while True:
            answer = await self.post(self.params(api_type, shop, **api))
            if answer["errorCode"] != 4000004:
                return answer
            await asyncio.sleep(0.05)


@pytest.fixture
async def sim_http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def sim_caller(sim_http: aiohttp.ClientSession, sim: Simulator) -> TemuCaller:
    return TemuCaller(sim_http, sim)


def past_the_lag(safety_lag_s: float) -> Callable[[], float]:
    """An engine clock ``safety_lag_s`` (and a bit) ahead: a pass run with it sees what one
    run after the lag would, without the test sleeping the lag out. The simulator applies a
    change at once, so nothing can still arrive in the window the lag protects."""
    ahead = safety_lag_s + 0.5
    return lambda: time.time() + ahead
