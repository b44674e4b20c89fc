"""The simulator's poison mode serves raw bytes no JSON encoder writes (issue 12)."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from engine.sim.config import SimConfig
from engine.sim.poison import ORDER_KINDS, RETURN_KINDS
from engine.sim.server import Simulator
from engine.temu.signing import signed_body
from tests.fixtures_sim import SimFactory, TemuCaller


async def _raw(caller: TemuCaller, api_type: str, **api: object) -> bytes:
    params = caller.params(api_type, **api)
    body = signed_body(params, caller.secret(params["app_key"]))
    async with caller.session.post(caller.sim.temu_url, data=body) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_poisoned_pages_hold_raw_bytes_and_the_truth_names_them(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim: Simulator = await sim_factory(
        SimConfig.default(orders=120, returns=60, shops=1, poison=True, seed=3)
    )
    caller = TemuCaller(sim_http, sim)
    start, end = sim.config.time_range()
    window = {"updateAtStart": start, "updateAtEnd": end}
    orders = b"".join(
        [
            await _raw(caller, "bg.order.list.v2.get", pageNumber=p, pageSize=100, **window)
            for p in (1, 2)
        ]
    )
    for raw in (b"\xff", b"1e400", b"123456789012345678901234567890", b"\\ud83d"):
        assert raw in orders, raw
    assert "\u3000".encode() in orders
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(await _raw(caller, "bg.order.list.v2.get", pageSize=100, **window))
    poisoned = sim.poisoned("shop-1")
    assert set(poisoned["orders"].values()) == {k for k, _ in ORDER_KINDS}
    assert set(poisoned["returns"].values()) <= {k for k, _ in RETURN_KINDS}
    # The truth stays clean.
    truth = {o["parentOrderMap"]["parentOrderSn"] for o in sim.truth_orders("shop-1")}
    assert set(poisoned["orders"]) <= truth
    # Off: the same pages are plain JSON again.
    sim.set_modes(poison=False)
    orjson.loads(await _raw(caller, "bg.order.list.v2.get", pageSize=100, **window))
