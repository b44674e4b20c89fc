"""After-sales APIs and the return-label upload against the simulator."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from engine.sim import SimConfig, Simulator
from tests.fixtures_sim import SimFactory, TemuCaller

LIST = "bg.aftersales.parentaftersales.list.get"
UPLOAD = "temu.aftersales.upload.returnlabel"
PREPARE = "temu.aftersales.returnlabel.prepare.get"
READBACK = "bg.aftersales.parentreturnorder.get"


def _awaiting(sim: Simulator, shop: str, delivery: int) -> dict[str, Any]:
    return next(
        r
        for r in sim.truth_returns(shop)
        if r["parentAfterSalesStatus"] == 8
        and 10 in r["availableOperateList"]
        and r["returnDeliveryType"] == delivery
    )


async def test_generated_returns_cover_every_status(sim: Simulator) -> None:
    returns = sim.truth_returns("shop-1")
    assert {r["parentAfterSalesStatus"] for r in returns} == set(range(1, 12))
    pending = [r for r in returns if r["parentAfterSalesStatus"] == 8]
    assert any(10 in r["availableOperateList"] for r in pending)
    assert any(10 not in r["availableOperateList"] for r in pending)
    assert {r["returnDeliveryType"] for r in pending} == {3, 4}
    logistics = sim.truth_logistics("shop-1")
    for r in pending:
        waiting = 10 in r["availableOperateList"]
        assert bool(logistics[r["parentAfterSalesSn"]]) is not waiting
    orders = {i["parentOrderMap"]["parentOrderSn"] for i in sim.truth_orders("shop-1")}
    assert all(r["parentOrderSn"] in orders for r in returns)


async def test_list_parameters(sim_caller: TemuCaller, sim: Simulator) -> None:
    end = sim.world.end_ts
    window = {"updateAtStart": 0, "updateAtEnd": end}
    assert (await sim_caller.call(LIST, pageNo=1, pageSize=10))["errorCode"] == 3000000
    assert (await sim_caller.call(LIST, pageNumber=1, pageSize=10, **window))[
        "errorCode"
    ] == 3000000
    assert (await sim_caller.call(LIST, pageNo=1, pageSize=201, **window))["errorCode"] == 3000000
    assert (await sim_caller.call(LIST, pageNo=1, createAtStart=0))["errorCode"] == 3000000
    answer = await sim_caller.call(LIST, pageNo=2, pageSize=200, **window)
    assert answer["result"] == {"total": 60, "pageNumber": 2, "data": []}


async def test_paging_and_filters(sim_caller: TemuCaller, sim: Simulator) -> None:
    truth = sim.truth_returns("shop-1")
    created = sorted(r["createAt"] for r in truth)
    lo, hi = created[10], created[50]
    seen: list[dict[str, Any]] = []
    page = 1
    while True:
        answer = await sim_caller.call(
            LIST, pageNo=page, pageSize=9, createAtStart=lo, createAtEnd=hi
        )
        assert answer["result"]["pageNumber"] == page
        if not answer["result"]["data"]:
            break
        seen += answer["result"]["data"]
        page += 1
    expected = [r for r in truth if lo <= r["createAt"] <= hi]
    assert seen == expected  # sorted by updateAt, newest first, closed interval
    assert answer["result"]["total"] == len(expected)
    group = await sim_caller.call(
        LIST,
        pageNo=1,
        pageSize=200,
        updateAtStart=0,
        updateAtEnd=sim.world.end_ts,
        afterSalesStatusGroup=2,
    )
    assert {r["afterSalesStatusGroup"] for r in group["result"]["data"]} == {2}
    assert group["result"]["total"] == sum(r["afterSalesStatusGroup"] == 2 for r in truth)
    sns = [truth[0]["parentAfterSalesSn"], truth[3]["parentAfterSalesSn"]]
    by_sn = await sim_caller.call(
        LIST,
        pageNo=1,
        pageSize=10,
        updateAtStart=0,
        updateAtEnd=sim.world.end_ts,
        parentAfterSalesSnList=sns,
    )
    assert [r["parentAfterSalesSn"] for r in by_sn["result"]["data"]] == sns


async def test_lines_and_logistics(sim_caller: TemuCaller, sim: Simulator) -> None:
    truth = sim.truth_returns("shop-1")
    sns = [r["parentAfterSalesSn"] for r in truth[:20]]
    lines_truth = [x for x in sim.truth_return_lines("shop-1") if x["parentAfterSalesSn"] in sns]
    answer = await sim_caller.call(
        "bg.aftersales.aftersales.list.get", parentAfterSalesSnList=sns, pageNo=1, pageSize=200
    )
    assert answer["result"]["total"] == len(lines_truth)
    assert sorted(x["afterSalesSn"] for x in answer["result"]["data"]) == sorted(
        x["afterSalesSn"] for x in lines_truth
    )
    for line in answer["result"]["data"]:
        assert {
            "afterSalesSn",
            "parentAfterSalesSn",
            "goodsId",
            "skuId",
            "productSkuId",
            "applyAfterSalesGoodsNumber",
            "afterSalesStatus",
            "afterSalesType",
        } <= set(line)
    missing = await sim_caller.call("bg.aftersales.aftersales.list.get", pageNo=1, pageSize=10)
    assert missing["errorCode"] == 3000000
    shipped = next(r for r in truth if r["parentAfterSalesStatus"] == 2)
    back = await sim_caller.call(READBACK, parentAfterSalesSn=shipped["parentAfterSalesSn"])
    assert (
        back["result"]["logisticsInfoList"]
        == sim.truth_logistics("shop-1")[shipped["parentAfterSalesSn"]]
    )
    assert back["result"]["logisticsInfoList"][0]["trackingNumber"]
    unknown = await sim_caller.call(READBACK, parentAfterSalesSn="RA-211-0")
    assert unknown["errorCode"] == 130010004


def _label(prepare: dict[str, Any], carrier_id: int = 699272611, **over: Any) -> dict[str, Any]:
    dto = {
        "mallWarehouseId": prepare["availableReturnWarehouseList"][0]["warehouseId"],
        "returnLabelUrl": "https://labels.example/l.pdf",
        "carrierId": carrier_id,
        "trackingNumber": "1Z999AA10123456784",
        "pickUpCertificateImageUrl": "",
    }
    dto.update(over)
    return dto


async def test_drop_off_label_upload_validation_and_effect(
    sim_caller: TemuCaller, sim: Simulator
) -> None:
    ret = _awaiting(sim, "shop-1", 3)
    ids = {"parentAfterSalesSn": ret["parentAfterSalesSn"], "parentOrderSn": ret["parentOrderSn"]}
    prep = (await sim_caller.call(PREPARE, **ids))["result"]
    assert prep["availableReturnWarehouseList"] and "merchantLatestPickUpTime" in prep

    async def upload(*dtos: dict[str, Any], **extra: Any) -> int:
        answer = await sim_caller.call(UPLOAD, **ids, returnLabelDTOList=list(dtos), **extra)
        return int(answer["errorCode"])

    assert await upload(_label(prep, returnLabelUrl="ftp://insecure/l.pdf")) == 130010006
    assert await upload(_label(prep, mallWarehouseId="WH-nowhere")) == 130010006
    assert await upload(_label(prep, carrierId=12345)) == 130010006
    assert await upload(_label(prep, trackingNumber="")) == 130010007
    assert await upload() == 3000000
    wrong_order = {**ids, "parentOrderSn": "PO-211-10000000000000000"}
    wrong = await sim_caller.call(UPLOAD, **wrong_order, returnLabelDTOList=[_label(prep)])
    assert wrong["errorCode"] == 130010004
    assert sim.uploads() == []  # nothing rejected was applied

    assert await upload(_label(prep, carrierId="699272613")) == 1000000
    assert len(sim.uploads()) == 1
    after = next(
        r
        for r in sim.truth_returns("shop-1")
        if r["parentAfterSalesSn"] == ret["parentAfterSalesSn"]
    )
    assert 10 not in after["availableOperateList"]
    assert after["updateAt"] >= sim.world.now() - 2
    back = await sim_caller.call(READBACK, parentAfterSalesSn=ret["parentAfterSalesSn"])
    assert back["result"]["logisticsInfoList"][0]["trackingNumber"] == "1Z999AA10123456784"
    assert back["result"]["logisticsInfoList"][0]["carrierName"] == "FedEx"
    # Once is all: the operation is gone.
    assert await upload(_label(prep)) == 130010005
    assert (await sim_caller.call(PREPARE, **ids))["errorCode"] == 130010005
    assert len(sim.uploads()) == 1


async def test_pick_up_label_needs_a_valid_schedule(sim_caller: TemuCaller, sim: Simulator) -> None:
    with_slots = next(
        r
        for r in sim.truth_returns("shop-1")
        if r["parentAfterSalesStatus"] == 8
        and 10 in r["availableOperateList"]
        and r["returnDeliveryType"] == 4
        and sim.world.shops["shop-1"].returns.by_sn[r["parentAfterSalesSn"]].pickup_slots
    )
    ids = {
        "parentAfterSalesSn": with_slots["parentAfterSalesSn"],
        "parentOrderSn": with_slots["parentOrderSn"],
    }
    prep = (await sim_caller.call(PREPARE, **ids))["result"]
    slot = prep["userSelectedPickUpTimeList"][0]
    dto = _label(prep, returnLabelUrl="", pickUpCertificateImageUrl="https://img.example/c.jpg")

    async def upload(**schedule: Any) -> int:
        answer = await sim_caller.call(UPLOAD, **ids, returnLabelDTOList=[dto], **schedule)
        return int(answer["errorCode"])

    assert await upload() == 3000000
    # A label PDF does not stand in for the pick-up certificate image.
    pdf_only = _label(prep)
    answer = await sim_caller.call(
        UPLOAD, **ids, returnLabelDTOList=[pdf_only], pickUpTimeScheduleMode=1, **slot
    )
    assert answer["errorCode"] == 130010006 and "pickUpCertificateImageUrl" in answer["errorMsg"]
    assert (
        await upload(
            pickUpTimeScheduleMode=1,
            startTimestamp=slot["startTimestamp"],
            endTimestamp=slot["endTimestamp"] + 1,
        )
        == 3000000
    )
    assert (
        await upload(pickUpTimeScheduleMode=3, latestTimestamp=prep["merchantLatestPickUpTime"] + 1)
        == 3000000
    )
    assert await upload(pickUpTimeScheduleMode=2) == 3000000
    assert sim.uploads() == []
    assert await upload(pickUpTimeScheduleMode=1, **slot) == 1000000
    [logged] = sim.uploads()
    assert logged["pickUpTimeScheduleMode"] == 1
    assert logged["startTimestamp"] == slot["startTimestamp"]


async def test_latest_time_mode_for_a_pick_up_without_buyer_slots(
    sim_caller: TemuCaller, sim: Simulator
) -> None:
    table = sim.world.shops["shop-1"].returns
    ret = next(
        r
        for r in sim.truth_returns("shop-1")
        if r["parentAfterSalesStatus"] == 8
        and 10 in r["availableOperateList"]
        and r["returnDeliveryType"] == 4
        and not table.by_sn[r["parentAfterSalesSn"]].pickup_slots
    )
    ids = {"parentAfterSalesSn": ret["parentAfterSalesSn"], "parentOrderSn": ret["parentOrderSn"]}
    prep = (await sim_caller.call(PREPARE, **ids))["result"]
    assert prep["userSelectedPickUpTimeList"] == []
    dto = _label(prep, pickUpCertificateImageUrl="https://img.example/c.jpg")
    answer = await sim_caller.call(
        UPLOAD,
        **ids,
        returnLabelDTOList=[dto],
        pickUpTimeScheduleMode=3,
        latestTimestamp=prep["merchantLatestPickUpTime"],
    )
    assert answer["success"], answer


async def test_prepare_is_forbidden_outside_label_pending(
    sim_caller: TemuCaller, sim: Simulator
) -> None:
    refunded = next(r for r in sim.truth_returns("shop-1") if r["parentAfterSalesStatus"] == 5)
    ids = {
        "parentAfterSalesSn": refunded["parentAfterSalesSn"],
        "parentOrderSn": refunded["parentOrderSn"],
    }
    assert (await sim_caller.call(PREPARE, **ids))["errorCode"] == 130010005
    sim.set_return_status("shop-1", refunded["parentAfterSalesSn"], 8, [10])
    prep = await sim_caller.call(PREPARE, **ids)
    assert prep["success"]
    assert sim.truth_logistics("shop-1")[refunded["parentAfterSalesSn"]] == []


async def test_upload_applied_but_answer_lost(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(
        SimConfig.default(orders=50, returns=30, shops=1, fault_after_apply_rate=1.0)
    )
    caller = TemuCaller(sim_http, sim)
    ret = _awaiting(sim, "shop-1", 3)
    ids = {"parentAfterSalesSn": ret["parentAfterSalesSn"], "parentOrderSn": ret["parentOrderSn"]}
    prep = (await caller.call(PREPARE, **ids))["result"]
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await caller.call(UPLOAD, **ids, returnLabelDTOList=[_label(prep)])
    assert len(sim.uploads()) == 1  # applied even though the client never heard back
    assert sim.stats()["faults_after_apply"] == 1
    again = await caller.call(UPLOAD, **ids, returnLabelDTOList=[_label(prep)])
    assert again["errorCode"] == 130010005


async def test_mutations_change_and_create_returns(sim: Simulator) -> None:
    before = {r["parentAfterSalesSn"]: r for r in sim.truth_returns("shop-2")}
    result = sim.mutate("shop-2", returns_changed=6, returns_new=4)
    now = result["now"]
    after = {r["parentAfterSalesSn"]: r for r in sim.truth_returns("shop-2")}
    assert len(after) == len(before) + 4
    for sn in result["returns_changed"]:
        assert after[sn]["updateAt"] == now
        assert after[sn] != before[sn]
    for sn in result["returns_new"]:
        assert after[sn]["createAt"] == after[sn]["updateAt"] == now
    stamps = [r["updateAt"] for r in sim.truth_returns("shop-2")]
    assert stamps == sorted(stamps, reverse=True)
