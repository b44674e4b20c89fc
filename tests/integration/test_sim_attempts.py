"""Issue 19: the simulator logs EVERY write attempt with its outcome, refused ones included,
and a revoked token can be mended."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from engine.sim import SimConfig, Simulator
from tests.fixtures_sim import SimFactory, TemuCaller
from tests.integration.test_sim_oc import Oc

UPLOAD = "temu.aftersales.upload.returnlabel"
PREPARE = "temu.aftersales.returnlabel.prepare.get"
ORDERS = "bg.order.list.v2.get"


def _awaiting_drop_off(sim: Simulator) -> dict[str, Any]:
    return next(
        r
        for r in sim.truth_returns("shop-1")
        if r["parentAfterSalesStatus"] == 8
        and 10 in r["availableOperateList"]
        and r["returnDeliveryType"] == 3
    )


async def _upload(caller: TemuCaller, ret: dict[str, Any], tracking: str) -> dict[str, Any]:
    ids = {"parentAfterSalesSn": ret["parentAfterSalesSn"], "parentOrderSn": ret["parentOrderSn"]}
    dto = {
        "mallWarehouseId": caller.sim.world.shops["shop-1"].warehouses[0].warehouse_id,
        "returnLabelUrl": "https://labels.example/l.pdf",
        "carrierId": 699272611,
        "trackingNumber": tracking,
    }
    return await caller.call(UPLOAD, **ids, returnLabelDTOList=[dto])


async def test_a_second_upload_is_logged_as_refused_already_uploaded(
    sim_caller: TemuCaller, sim: Simulator, sim_http: aiohttp.ClientSession
) -> None:
    ret = _awaiting_drop_off(sim)
    sn = ret["parentAfterSalesSn"]
    assert (await _upload(sim_caller, ret, "1Z0000000001"))["success"]
    second = await _upload(sim_caller, ret, "1Z0000000002")
    assert second["errorCode"] == 130010005
    assert [u["parentAfterSalesSn"] for u in sim.uploads()] == [sn]  # applied: once
    attempts = sim.upload_attempts("shop-1")
    assert [(a["parentAfterSalesSn"], a["outcome"], a["reason"]) for a in attempts] == [
        (sn, "accepted", ""),
        (sn, "refused", "already_uploaded"),
    ]
    assert attempts[1]["errorCode"] == 130010005 and attempts[1]["shopId"] == "shop-1"
    # A return that was never awaiting a label is refused for that reason, not "already".
    refunded = next(r for r in sim.truth_returns("shop-1") if r["parentAfterSalesStatus"] == 5)
    await _upload(sim_caller, refunded, "1Z0000000003")
    assert sim.upload_attempts("shop-1")[-1]["reason"] == "not_awaiting_label"
    # Over HTTP as well, for a simulator in another process.
    async with sim_http.get(f"{sim.root_url}/_sim/truth/upload-attempts?shop=shop-1") as r:
        assert orjson.loads(await r.read()) == sim.upload_attempts("shop-1")
    assert sim.upload_attempts("shop-2") == []


async def test_gateway_refusals_of_an_upload_are_logged_too(
    sim_caller: TemuCaller, sim: Simulator
) -> None:
    ret = _awaiting_drop_off(sim)
    sim.set_faults(1.0, ["sys4000000"])
    assert (await _upload(sim_caller, ret, "1Z0000000001"))["errorCode"] == 4000000
    sim.set_faults(0.0)
    sim.revoke_token("sim-token-shop-1")
    assert (await _upload(sim_caller, ret, "1Z0000000001"))["errorCode"] == 3000034
    assert [(a["outcome"], a["reason"]) for a in sim.upload_attempts()] == [
        ("refused", "fault:sys4000000"),
        ("refused", "token"),
    ]
    assert sim.uploads() == []


async def test_a_second_cancel_is_logged_as_refused_already_cancelled(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(SimConfig.default(orders=100, returns=40, shops=1))
    oc = Oc(sim_http, sim)
    await oc.refresh()
    rma = next(r for r in sim.rmas("shop-1") if r["status"] == "OPEN")
    cancel = {
        "messageId": "m-1",
        "data": {"orderNumber": rma["orderNumber"], "operation": "CANCEL"},
    }
    assert (await oc.post(cancel))[1]["success"]
    assert (await oc.post(cancel))[1]["success"]  # the same message again: replayed
    _, second = await oc.post({**cancel, "messageId": "m-2"})
    assert second["success"] is False
    assert len(sim.oc_pushes()) == 1
    attempts = sim.oc_attempts("shop-1")
    assert [(a["messageId"], a["outcome"], a["reason"]) for a in attempts] == [
        ("m-1", "accepted", ""),
        ("m-1", "replayed", ""),
        ("m-2", "refused", "already_cancelled"),
    ]
    assert {a["referenceNumber"] for a in attempts} == {rma["referenceNumber"]}
    assert {a["operation"] for a in attempts} == {"CANCEL"}
    # Refused before OC looked at it: an expired access token.
    sim.expire_oc_tokens()
    await oc.post({**cancel, "messageId": "m-3"})
    assert sim.oc_attempts()[-1]["reason"] == "unauthorized"


async def test_unrevoke_makes_a_revoked_token_work_again(
    sim_caller: TemuCaller, sim: Simulator, sim_http: aiohttp.ClientSession
) -> None:
    window = {"pageNumber": 1, "pageSize": 1, "updateAtStart": 0, "updateAtEnd": sim.world.end_ts}
    assert (await sim_caller.call(ORDERS, **window))["success"]
    async with sim_http.post(
        f"{sim.root_url}/_sim/revoke", data=orjson.dumps({"token": "sim-token-shop-1"})
    ) as r:
        assert r.status == 200
    assert (await sim_caller.call(ORDERS, **window))["errorCode"] == 3000034
    assert (await sim_caller.call(ORDERS, shop=1, **window))["success"]  # the other shop
    async with sim_http.post(
        f"{sim.root_url}/_sim/unrevoke", data=orjson.dumps({"token": "sim-token-shop-1"})
    ) as r:
        assert r.status == 200
    assert (await sim_caller.call(ORDERS, **window))["success"]
    async with sim_http.post(
        f"{sim.root_url}/_sim/unrevoke", data=orjson.dumps({"token": "nobody"})
    ) as r:
        assert r.status == 404
    assert sim.revoke_token("sim-token-shop-2") and sim.unrevoke_token("sim-token-shop-2")
    assert (await sim_caller.call(ORDERS, shop=1, **window))["success"]
