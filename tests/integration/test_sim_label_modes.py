"""Issue 14 modes of the simulator (engine/sim/modes.py), over real HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from engine.sim import SimConfig, Simulator
from engine.temu.signing import signed_body
from tests.fixtures_sim import SimFactory, TemuCaller
from tests.integration.test_sim_oc import Oc

LIST = "bg.aftersales.parentaftersales.list.get"
UPLOAD = "temu.aftersales.upload.returnlabel"
PREPARE = "temu.aftersales.returnlabel.prepare.get"
READBACK = "bg.aftersales.parentreturnorder.get"
CARRIERS = "temu.aftersales.carrier.get"
COMPANIES = "bg.logistics.companies.get"
ORDERS_PATH = "/3pp/returns/v1/query/orders"
LABEL_PATH = "/3pp/returns/v1/query/label"


def _ids(ret: dict[str, Any]) -> dict[str, Any]:
    return {"parentAfterSalesSn": ret["parentAfterSalesSn"], "parentOrderSn": ret["parentOrderSn"]}


def _awaiting(sim: Simulator, delivery: int) -> dict[str, Any]:
    return next(
        r
        for r in sim.truth_returns("shop-1")
        if r["parentAfterSalesStatus"] == 8
        and 10 in r["availableOperateList"]
        and r["returnDeliveryType"] == delivery
    )


def _dto(sim: Simulator, *, pick_up: bool, tracking: str = "1Z999AA10123456784") -> dict[str, Any]:
    return {
        "mallWarehouseId": sim.world.shops["shop-1"].warehouses[0].warehouse_id,
        "returnLabelUrl": "" if pick_up else "https://labels.example/l.pdf",
        "pickUpCertificateImageUrl": "https://img.example/c.jpg" if pick_up else "",
        "carrierId": 699272611,
        "trackingNumber": tracking,
    }


async def _list_item(caller: TemuCaller, sn: str) -> dict[str, Any]:
    answer = await caller.call(
        LIST,
        pageNo=1,
        pageSize=10,
        updateAtStart=0,
        updateAtEnd=int(caller.sim.world.clock()) + 10,
        parentAfterSalesSnList=[sn],
    )
    [item] = answer["result"]["data"]
    return dict(item)


# -- a. OC answers holding other returns' RMAs ------------------------------------------------
async def test_oc_answers_hold_foreign_rmas_a_ready_one_first(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(SimConfig.default(orders=200, returns=80, shops=2, oc_foreign_rmas=3))
    oc = Oc(sim_http, sim)
    await oc.refresh()
    waiting = {
        r["parentAfterSalesSn"]
        for r in sim.truth_returns("shop-1")
        if r["parentAfterSalesStatus"] == 8 and 10 in r["availableOperateList"]
    }
    own = next(r for r in sim.rmas("shop-1") if r["referenceNumber"] in waiting)
    ref = own["referenceNumber"]
    _, found = await oc.get(ORDERS_PATH, referenceNumber=ref, messageId="q1")
    result = found["result"]
    assert len(result) == 4
    assert result[0]["referenceNumber"] != ref  # a stranger comes first
    assert [r["orderNumber"] for r in result if r["referenceNumber"] == ref] == [own["orderNumber"]]
    foreign = [r for r in result if r["referenceNumber"] != ref]
    ready = {}
    for i, rma in enumerate(foreign):
        _, label = await oc.get(LABEL_PATH, orderNumber=rma["orderNumber"], messageId=f"l{i}")
        ready[rma["orderNumber"]] = bool(label["success"] and label["result"]["docUrl"])
    assert ready[foreign[0]["orderNumber"]]  # the first one's label is ready to take
    assert not all(ready.values())  # and an open one with no label yet is among them
    assert {r["status"] for r in foreign} == {"OPEN"}
    # The same question gets the same answer; a return without an RMA gets strangers only.
    _, again = await oc.get(ORDERS_PATH, referenceNumber=ref, messageId="q2")
    assert [r["orderNumber"] for r in again["result"]] == [r["orderNumber"] for r in result]
    _, none = await oc.get(ORDERS_PATH, referenceNumber="RA-nothing", messageId="q3")
    assert len(none["result"]) == 3
    assert all(r["referenceNumber"] != "RA-nothing" for r in none["result"])
    sim.set_modes(oc_foreign_rmas=0)
    _, plain = await oc.get(ORDERS_PATH, referenceNumber=ref, messageId="q4")
    assert [r["referenceNumber"] for r in plain["result"]] == [ref]


# -- b. buyer-chosen pick-up ------------------------------------------------------------------
async def test_pickup_cases_with_and_without_slots_and_oc_labels(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(
        SimConfig.default(
            orders=100, returns=20, shops=1, pickup_cases=True, refuse_mode_mismatch=True
        )
    )
    caller = TemuCaller(sim_http, sim)
    cases = {c["case"]: c for c in sim.pickup_cases("shop-1")}
    assert set(cases) == {
        "slots_oc_label",
        "slots_merchant_label",
        "no_slots_oc_label",
        "no_slots_merchant_label",
    }
    rmas = {r["referenceNumber"]: r for r in sim.rmas("shop-1")}
    for name, case in cases.items():
        sn = case["parentAfterSalesSn"]
        item = await _list_item(caller, sn)
        assert item["returnDeliveryType"] == 4 and item["parentAfterSalesStatus"] == 8
        assert 10 in item["availableOperateList"]
        prep = (await caller.call(PREPARE, **_ids(case)))["result"]
        assert bool(prep["userSelectedPickUpTimeList"]) is name.startswith("slots")
        assert (sn in rmas) is name.endswith("oc_label")
        if sn in rmas:
            assert rmas[sn]["orderNumber"] == case["rma"]

    # A drop-off upload on a pick-up return is refused (the spec is silent: the less
    # convenient answer), logged with its reason, and nothing changes.
    slots = cases["slots_merchant_label"]
    refused = await caller.call(
        UPLOAD, **_ids(slots), returnLabelDTOList=[_dto(sim, pick_up=False)]
    )
    assert refused["errorCode"] == 130010006 and "pick-up" in refused["errorMsg"]
    assert sim.upload_attempts()[-1]["reason"] == "mode_mismatch"
    assert sim.uploads() == []
    # The pick-up upload the buyer's choice asks for goes through: a slot when there are
    # slots, the merchant's latest time when there are none.
    prep = (await caller.call(PREPARE, **_ids(slots)))["result"]
    slot = prep["userSelectedPickUpTimeList"][0]
    ok = await caller.call(
        UPLOAD,
        **_ids(slots),
        returnLabelDTOList=[_dto(sim, pick_up=True)],
        pickUpTimeScheduleMode=1,
        **slot,
    )
    assert ok["success"], ok
    bare = cases["no_slots_oc_label"]
    prep = (await caller.call(PREPARE, **_ids(bare)))["result"]
    ok = await caller.call(
        UPLOAD,
        **_ids(bare),
        returnLabelDTOList=[_dto(sim, pick_up=True)],
        pickUpTimeScheduleMode=3,
        latestTimestamp=prep["merchantLatestPickUpTime"],
    )
    assert ok["success"], ok
    # A pick-up upload on a drop-off return is refused the same way.
    drop = _awaiting(sim, 3)
    wrong = await caller.call(
        UPLOAD,
        **_ids(drop),
        returnLabelDTOList=[_dto(sim, pick_up=True)],
        pickUpTimeScheduleMode=3,
        latestTimestamp=prep["merchantLatestPickUpTime"],
    )
    assert wrong["errorCode"] == 130010006 and "drop-off" in wrong["errorMsg"]
    assert [u["parentAfterSalesSn"] for u in sim.uploads()] == [
        slots["parentAfterSalesSn"],
        bare["parentAfterSalesSn"],
    ]


async def test_mode_mismatch_is_accepted_by_default(sim_caller: TemuCaller, sim: Simulator) -> None:
    assert sim.pickup_cases() == []
    pick = _awaiting(sim, 4)
    answer = await sim_caller.call(
        UPLOAD, **_ids(pick), returnLabelDTOList=[_dto(sim, pick_up=False)]
    )
    assert answer["success"], answer


# -- c. the upload's answer is lost while the returns list lags --------------------------------
async def test_lost_answer_while_the_list_lags_and_the_detail_does_not(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(
        SimConfig.default(
            orders=50, returns=30, shops=1, lost_upload_answers=1, return_list_lag_s=60
        )
    )
    caller = TemuCaller(sim_http, sim)
    ret = _awaiting(sim, 3)
    sn = ret["parentAfterSalesSn"]
    before = await _list_item(caller, sn)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await caller.call(UPLOAD, **_ids(ret), returnLabelDTOList=[_dto(sim, pick_up=False)])
    assert [u["parentAfterSalesSn"] for u in sim.uploads()] == [sn]  # applied all the same
    assert sim.upload_attempts()[-1]["answerLost"] is True
    assert sim.stats()["lost_answers"] == 1
    # The list still shows the return awaiting its label; the detail has the new tracking.
    lagging = await _list_item(caller, sn)
    assert lagging == before
    assert lagging["parentAfterSalesStatus"] == 8 and 10 in lagging["availableOperateList"]
    detail = (await caller.call(READBACK, parentAfterSalesSn=sn))["result"]
    assert [x["trackingNumber"] for x in detail["logisticsInfoList"]] == ["1Z999AA10123456784"]
    # Believing the list and uploading again is refused as already done, and logged so.
    again = await caller.call(UPLOAD, **_ids(ret), returnLabelDTOList=[_dto(sim, pick_up=False)])
    assert again["errorCode"] == 130010005
    assert sim.upload_attempts()[-1]["reason"] == "already_uploaded"
    # The lag is over: the simulator's clock steps past it (no race with a busy machine).
    sim.world.clock = lambda: time.time() + 61
    caught_up = await _list_item(caller, sn)
    assert 10 not in caught_up["availableOperateList"]
    assert caught_up["updateAt"] > before["updateAt"]


async def test_lost_answer_by_delay_past_the_client_timeout(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(SimConfig.default(orders=50, returns=30, shops=1))
    caller = TemuCaller(sim_http, sim)
    async with sim_http.post(
        f"{sim.root_url}/_sim/modes",
        data=orjson.dumps(
            {"lost_upload_answers": 1, "lost_answer_how": "delay", "lost_answer_delay_s": 0.5}
        ),
    ) as r:
        assert r.status == 200
        assert orjson.loads(await r.read())["lost_answer_how"] == "delay"
    ret = _awaiting(sim, 3)
    params = caller.params(UPLOAD, **_ids(ret), returnLabelDTOList=[_dto(sim, pick_up=False)])
    body = signed_body(params, sim.config.apps[0].app_secret)
    with pytest.raises(asyncio.TimeoutError):
        async with sim_http.post(
            sim.temu_url, data=body, timeout=aiohttp.ClientTimeout(total=0.2)
        ) as resp:
            await resp.read()
    assert len(sim.uploads()) == 1
    [attempt] = sim.upload_attempts()
    assert attempt["outcome"] == "accepted" and attempt["answerLost"] is True
    assert sim.set_modes()["lost_upload_answers"] == 0  # spent: the next answer arrives


# -- d. an empty carrier list once -------------------------------------------------------------
async def test_empty_carrier_list_once_then_the_normal_list(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(
        SimConfig.default(orders=20, returns=10, shops=1, empty_carrier_lists=1)
    )
    caller = TemuCaller(sim_http, sim)
    first = await caller.call(CARRIERS, returnWarehouseRegionId1=211)
    assert first["success"] and first["result"] == {"carrierDTOList": []}
    second = await caller.call(CARRIERS, returnWarehouseRegionId1=211)
    assert len(second["result"]["carrierDTOList"]) > 3
    sim.set_modes(empty_carrier_lists=1)
    empty = await caller.call(COMPANIES)
    assert empty["result"] == {"logisticsServiceProviderList": []}
    assert (await caller.call(COMPANIES))["result"]["logisticsServiceProviderList"]


async def test_modes_are_off_by_default_and_bad_modes_change_nothing(
    sim: Simulator, sim_http: aiohttp.ClientSession
) -> None:
    assert sim.set_modes() == {
        "oc_foreign_rmas": 0,
        "pickup_cases": False,
        "refuse_mode_mismatch": False,
        "lost_upload_answers": 0,
        "lost_answer_how": "close",
        "lost_answer_delay_s": 35.0,
        "return_list_lag_s": 0.0,
        "empty_carrier_lists": 0,
        "oc_bare_labels": False,
        "exclusive_order_filters": False,
        "oc_business_success": False,
        "string_error_codes": False,
        "lines_max_page_size": 0,
        "ignore_return_sn_filter": False,
        "nul_in_errors": False,
        "logistics_not_ready": 0,
        "poison": False,
        "accept_second_label": False,
    }
    for body in (
        {"oc_foreign_rmas": 2, "no_such_mode": 1},
        {"oc_foreign_rmas": 2, "lost_answer_how": "sometimes"},
        {"oc_foreign_rmas": -1},
        {"refuse_mode_mismatch": "yes"},
        {"pickup_cases": True},  # shapes the world: build time only
    ):
        async with sim_http.post(f"{sim.root_url}/_sim/modes", data=orjson.dumps(body)) as r:
            assert r.status == 400, body
    assert sim.set_modes()["oc_foreign_rmas"] == 0
    with pytest.raises(ValueError):
        SimConfig.default(lost_answer_how="never")
