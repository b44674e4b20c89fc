"""The /_sim control endpoints and fault injection, driven over HTTP like the benchmark does."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from engine.sim import SimConfig, Simulator
from tests.fixtures_sim import SimFactory, TemuCaller


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as r:
        assert r.status == 200, await r.text()
        return orjson.loads(await r.read())


async def _post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with session.post(url, data=orjson.dumps(body)) as r:
        return r.status, orjson.loads(await r.read())


async def test_truth_stats_and_knobs_over_http(
    sim: Simulator, sim_caller: TemuCaller, sim_http: aiohttp.ClientSession
) -> None:
    root = sim.root_url + "/_sim"
    info = await _get(sim_http, root + "/info")
    assert info["temu_url"] == sim.temu_url and info["shops"][0]["access_token"]
    orders = await _get(sim_http, root + "/truth/orders?shop=shop-1")
    assert orders == sim.truth_orders("shop-1") and len(orders) == 300
    for kind in ("returns", "return_lines", "logistics", "uploads", "oc_pushes", "rmas"):
        assert await _get(sim_http, f"{root}/truth/{kind}?shop=shop-1") is not None
    async with sim_http.get(root + "/truth/nothing?shop=shop-1") as r:
        assert r.status == 404

    status, changed = await _post(
        sim_http, root + "/mutate", {"shop": "shop-1", "orders_new": 2, "returns_changed": 1}
    )
    assert status == 200 and len(changed["orders_new"]) == 2
    assert len(sim.truth_orders("shop-1")) == 302
    assert (await _post(sim_http, root + "/mutate", {"shop": "nope"}))[0] == 404

    await sim_caller.call("bg.logistics.companies.get")
    stats = await _get(sim_http, root + "/stats")
    assert stats["apps"]["sim-app-1"]["accepted"] == 1
    assert stats["apps"]["sim-app-1"]["by_type"] == {"bg.logistics.companies.get": 1}
    assert (await _post(sim_http, root + "/reset-stats", {}))[0] == 200
    assert (await _get(sim_http, root + "/stats"))["apps"]["sim-app-1"]["accepted"] == 0

    ret = next(r for r in sim.truth_returns("shop-1") if r["parentAfterSalesStatus"] == 10)
    status, item = await _post(
        sim_http,
        root + "/return-status",
        {"shop": "shop-1", "sn": ret["parentAfterSalesSn"], "status": 8, "operations": [10]},
    )
    assert status == 200 and item["parentAfterSalesStatus"] == 8
    assert item["availableOperateList"] == [10]
    status, rma = await _post(
        sim_http, root + "/rma", {"shop": "shop-1", "sn": ret["parentAfterSalesSn"]}
    )
    assert status == 200 and rma["referenceNumber"] == ret["parentAfterSalesSn"]

    status, knobs = await _post(
        sim_http, root + "/faults", {"rate": 0.5, "kinds": ["http502"], "fault_after_apply_rate": 0}
    )
    assert status == 200 and knobs["fault_kinds"] == ["http502"] and knobs["fault_rate"] == 0.5
    assert (await _post(sim_http, root + "/faults", {"rate": 2}))[0] == 400
    assert (await _post(sim_http, root + "/faults", {"rate": 0.1, "kinds": ["x"]}))[0] == 400
    await _post(sim_http, root + "/faults", {"rate": 0})

    token = sim.config.shops[0].access_token
    assert (await _post(sim_http, root + "/revoke", {"token": token}))[0] == 200
    assert (await sim_caller.call("bg.logistics.companies.get"))["errorCode"] == 3000034
    assert (await _post(sim_http, root + "/revoke", {"token": "nobody"}))[0] == 404


@pytest.mark.parametrize("kind", ["http502", "sys4000000", "truncated", "drop"])
async def test_each_fault_kind_and_that_faults_change_nothing(
    kind: str, sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(SimConfig.default(orders=30, returns=30, shops=1))
    caller = TemuCaller(sim_http, sim)
    ret = next(
        r
        for r in sim.truth_returns("shop-1")
        if r["parentAfterSalesStatus"] == 8
        and 10 in r["availableOperateList"]
        and r["returnDeliveryType"] == 3
    )
    ids = {"parentAfterSalesSn": ret["parentAfterSalesSn"], "parentOrderSn": ret["parentOrderSn"]}
    warehouse = sim.world.shops["shop-1"].warehouses[0].warehouse_id
    dto = {
        "mallWarehouseId": warehouse,
        "returnLabelUrl": "https://l.example/a.pdf",
        "carrierId": 699272611,
        "trackingNumber": "1Z0000000001",
    }
    body_params = caller.params(
        "temu.aftersales.upload.returnlabel", **ids, returnLabelDTOList=[dto]
    )
    sim.set_faults(1.0, [kind])
    from engine.temu.signing import signed_body

    body = signed_body(body_params, sim.config.apps[0].app_secret)
    try:
        async with sim_http.post(sim.temu_url, data=body) as r:
            raw = await r.read()
            status = r.status
    except aiohttp.ServerDisconnectedError:
        status, raw = -1, b""
    if kind == "http502":
        assert status == 502 and raw.startswith(b"<html>")
    elif kind == "sys4000000":
        assert status == 200 and orjson.loads(raw)["errorCode"] == 4000000
    elif kind == "truncated":
        assert status == 200
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)
    else:
        assert status == -1
    assert sim.uploads() == []
    assert sim.stats()["faults"] == {kind: 1}
    sim.set_faults(0.0)
    assert (await caller.post(body_params))["success"]
    # Bad credentials are answered before any fault is drawn.
    sim.set_faults(1.0, [kind])
    assert (await caller.post(body_params, secret="bad"))["errorCode"] == 3000001


async def test_slow_fault_delays_and_applies_nothing_if_the_client_left(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(SimConfig.default(orders=10, returns=2, shops=1, slow_s=0.3))
    caller = TemuCaller(sim_http, sim)
    sim.set_faults(1.0, ["slow"])
    answer = await caller.post(caller.params("bg.logistics.companies.get"))
    assert answer["success"]  # slow, but it arrives
    assert sim.stats()["faults"] == {"slow": 1}


async def test_slow_upload_is_not_applied_when_the_client_gave_up(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    import asyncio

    from engine.temu.signing import signed_body

    sim = await sim_factory(SimConfig.default(orders=30, returns=30, shops=1, slow_s=0.3))
    caller = TemuCaller(sim_http, sim)
    ret = next(
        r
        for r in sim.truth_returns("shop-1")
        if r["parentAfterSalesStatus"] == 8
        and 10 in r["availableOperateList"]
        and r["returnDeliveryType"] == 3
    )
    warehouse = sim.world.shops["shop-1"].warehouses[0].warehouse_id
    dto = {
        "mallWarehouseId": warehouse,
        "returnLabelUrl": "https://l.example/a.pdf",
        "carrierId": 699272611,
        "trackingNumber": "1Z0000000001",
    }
    params = caller.params(
        "temu.aftersales.upload.returnlabel",
        parentAfterSalesSn=ret["parentAfterSalesSn"],
        parentOrderSn=ret["parentOrderSn"],
        returnLabelDTOList=[dto],
    )
    sim.set_faults(1.0, ["slow"])
    body = signed_body(params, sim.config.apps[0].app_secret)
    with pytest.raises(asyncio.TimeoutError):
        async with sim_http.post(
            sim.temu_url, data=body, timeout=aiohttp.ClientTimeout(total=0.1)
        ) as r:
            await r.read()
    await asyncio.sleep(0.4)
    assert sim.uploads() == []


async def test_webhook_delivery_is_configured_over_http(
    sim: Simulator, sim_http: aiohttp.ClientSession
) -> None:
    """The benchmark's simulator runs in another process: delivery is set over /_sim."""
    root = sim.root_url + "/_sim"
    body = {"url": "http://127.0.0.1:9/hook", "duplicate_rate": 0.5, "lost_ack_rate": 0.1}
    status, answer = await _post(sim_http, root + "/webhooks", {**body, "seed": 3})
    assert status == 200 and answer["mall_ids"] == sim.webhooks.mall_ids
    assert sim.webhooks.url == body["url"] and sim.webhooks.duplicate_rate == 0.5
    assert sim.webhooks.lost_ack_rate == 0.1 and sim.webhooks.forge_rate == 0.0
    assert await _get(sim_http, root + "/webhooks") == dict(sim.webhooks.counts)
    assert (await _post(sim_http, root + "/webhooks", {"url": "x", "forge_rate": "a"}))[0] == 400


async def test_held_requests_wait_until_released(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(SimConfig.default(orders=10, returns=2, shops=1))
    caller = TemuCaller(sim_http, sim)
    sim.hold_requests()
    call = asyncio.create_task(caller.post(caller.params("bg.logistics.companies.get")))
    deadline = asyncio.get_running_loop().time() + 10
    while sim.held_requests("bg.logistics.companies.get") < 1:
        assert asyncio.get_running_loop().time() < deadline, "the request never arrived"
        await asyncio.sleep(0.01)
    assert not call.done()
    sim.release_requests()
    answer = await asyncio.wait_for(call, 10)
    assert answer["success"] and sim.held_requests() == 0
