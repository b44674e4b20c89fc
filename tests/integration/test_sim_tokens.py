"""Issue 15: bg.open.accesstoken.info.get, per-shop expiry and scopes (temu-api.md)."""

from __future__ import annotations

import time

import aiohttp
import orjson

from engine.sim import SimConfig, SimShop, Simulator
from tests.fixtures_sim import SimFactory, TemuCaller

INFO = "bg.open.accesstoken.info.get"
ORDERS = "bg.order.list.v2.get"
RETURNS = "bg.aftersales.parentaftersales.list.get"
# What engine/temu calls today; the default grant must cover every one of them.
ENGINE_TYPES = {
    INFO,
    ORDERS,
    "bg.order.detail.v2.get",
    RETURNS,
    "bg.aftersales.aftersales.list.get",
    "bg.aftersales.parentreturnorder.get",
    "temu.aftersales.returnlabel.prepare.get",
    "temu.aftersales.upload.returnlabel",
    "temu.aftersales.carrier.get",
    "bg.logistics.companies.get",
}
NO_SCOPE_MSG = (
    "access_token don't have this api access, please ask for seller to authorize this api in "
    "seller center first\uff0cand share the new access_token with you."
)


def _orders_window(sim: Simulator) -> dict[str, int]:
    return {"pageNumber": 1, "pageSize": 1, "updateAtStart": 0, "updateAtEnd": sim.world.end_ts}


async def test_default_grant_is_far_off_and_covers_every_engine_call(
    sim_caller: TemuCaller, sim: Simulator
) -> None:
    before = sim.stats(arrivals=False)["apps"]["sim-app-1"]["accepted"]
    answer = await sim_caller.call(INFO)
    assert answer["success"] and answer["errorCode"] == 1000000
    info = answer["result"]
    assert info["accessToken"] == "sim-token-shop-1"
    assert info["expiredTime"] > time.time() + 5 * 365 * 86400
    assert set(info["apiScopeList"]) >= ENGINE_TYPES
    assert isinstance(info["mallId"], int)
    assert {"appSubscribeEventCodeList", "appSubscribeStatus", "authEventCodeList"} <= set(info)
    # One request of the app's budget, like any other call.
    assert sim.stats(arrivals=False)["apps"]["sim-app-1"]["accepted"] == before + 1
    other = (await sim_caller.call(INFO, shop=1))["result"]
    assert other["accessToken"] == "sim-token-shop-2" and other["mallId"] != info["mallId"]
    # The events the simulator delivers carry the same mallId, so they map to the shop.
    assert sim.webhooks.mall_ids == {"shop-1": info["mallId"], "shop-2": other["mallId"]}


async def test_a_type_outside_the_scopes_answers_3000032(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    base = SimConfig.default(orders=50, returns=20, shops=2)
    limited = SimShop(
        "shop-1",
        "sim-app-1",
        "sim-token-shop-1",
        orders=50,
        returns=20,
        token_scopes=(INFO, ORDERS),
    )
    sim = await sim_factory(SimConfig(apps=base.apps, shops=(limited, base.shops[1])))
    caller = TemuCaller(sim_http, sim)
    info = (await caller.call(INFO))["result"]
    assert sorted(info["apiScopeList"]) == sorted([INFO, ORDERS])
    assert (await caller.call(ORDERS, **_orders_window(sim)))["success"]
    refused = await caller.call(RETURNS, pageNo=1, updateAtStart=0, updateAtEnd=1)
    assert refused == {
        "success": False,
        "errorCode": 3000032,
        "errorMsg": NO_SCOPE_MSG,
        "requestId": refused["requestId"],
        "result": None,
    }
    # The other shop's default grant is untouched.
    other = await caller.call(RETURNS, shop=1, pageNo=1, updateAtStart=0, updateAtEnd=1)
    assert other["success"]
    # Granting it through the control API makes it work; the expiry stays as it was.
    async with sim_http.post(
        f"{sim.root_url}/_sim/token",
        data=orjson.dumps({"shop": "shop-1", "scopes": [INFO, ORDERS, RETURNS]}),
    ) as r:
        assert r.status == 200
        granted = orjson.loads(await r.read())
    assert granted["expiredTime"] == info["expiredTime"]
    assert (await caller.call(RETURNS, pageNo=1, updateAtStart=0, updateAtEnd=1))["success"]
    # Without the info scope the token cannot even ask what it holds.
    sim.set_token("shop-1", scopes=[ORDERS])
    assert (await caller.call(INFO))["errorCode"] == 3000032


async def test_an_expired_token_answers_3000034_and_can_be_renewed(
    sim_caller: TemuCaller, sim: Simulator, sim_http: aiohttp.ClientSession
) -> None:
    soon = int(time.time()) + 3 * 86400
    assert sim.set_token("shop-1", expires_at=soon)["expiredTime"] == soon
    assert (await sim_caller.call(INFO))["result"]["expiredTime"] == soon
    past = int(time.time()) - 1
    async with sim_http.post(
        f"{sim.root_url}/_sim/token", data=orjson.dumps({"shop": "shop-1", "expires_at": past})
    ) as r:
        assert r.status == 200
    for api_type, params in ((INFO, {}), (ORDERS, _orders_window(sim))):
        answer = await sim_caller.call(api_type, **params)
        assert answer["errorCode"] == 3000034, api_type
    assert (await sim_caller.call(INFO, shop=1))["success"]
    sim.set_token("shop-1", expires_at=soon)
    assert (await sim_caller.call(ORDERS, **_orders_window(sim)))["success"]


async def test_bad_token_control_requests_are_refused_and_change_nothing(
    sim: Simulator, sim_http: aiohttp.ClientSession
) -> None:
    before = sim.world.grants["shop-1"]
    for body, status in (
        ({"shop": "shop-1", "expires_at": "tomorrow"}, 400),
        ({"shop": "shop-1", "scopes": "bg.order.list.v2.get"}, 400),
        ({"shop": "shop-9", "expires_at": 1}, 404),
    ):
        async with sim_http.post(f"{sim.root_url}/_sim/token", data=orjson.dumps(body)) as r:
            assert r.status == status, body
            assert "error" in orjson.loads(await r.read())
    assert sim.world.grants["shop-1"] == before
