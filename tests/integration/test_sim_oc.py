"""Orange Connex in the simulator: OAuth rotation, 401s, label readiness, messageId dedupe."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from engine.sim import SimConfig, Simulator
from tests.fixtures_sim import SimFactory


class Oc:
    def __init__(self, session: aiohttp.ClientSession, sim: Simulator) -> None:
        self.session = session
        self.sim = sim
        self.refresh_token = sim.config.oc_refresh_token
        self.access = ""

    async def refresh(self, token: str | None = None) -> tuple[int, dict[str, Any]]:
        query = {
            "client_id": self.sim.config.oc_client_id,
            "grant_type": "refresh_token",
            "refresh_token": token or self.refresh_token,
        }
        async with self.session.post(self.sim.oc_oauth_url + "/oauth/token", params=query) as r:
            body = orjson.loads(await r.read())
            if r.status == 200:
                self.refresh_token, self.access = body["refresh_token"], body["access_token"]
            return r.status, body

    async def get(self, path: str, **query: str) -> tuple[int, dict[str, Any]]:
        headers = {"Access-Token": self.access}
        url = self.sim.oc_base_url + path
        async with self.session.get(url, params=query, headers=headers) as r:
            return r.status, orjson.loads(await r.read())

    async def post(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        headers = {"Access-Token": self.access, "Content-Type": "application/json"}
        url = self.sim.oc_base_url + "/3pp/returns/v1/cancel/rma"
        async with self.session.post(url, data=orjson.dumps(body), headers=headers) as r:
            return r.status, orjson.loads(await r.read())


async def _oc(sim_factory: SimFactory, session: aiohttp.ClientSession, **kw: Any) -> Oc:
    sim = await sim_factory(SimConfig.default(orders=100, returns=40, shops=1, **kw))
    return Oc(session, sim)


async def test_refresh_rotates_and_the_old_refresh_token_dies(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    oc = await _oc(sim_factory, sim_http)
    first = oc.refresh_token
    status, body = await oc.refresh()
    assert status == 200
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert body["refresh_token"] != first
    status, body = await oc.refresh(first)
    assert status == 400 and body["error"] == "invalid_grant"
    assert (await oc.refresh())[0] == 200  # the rotated one works
    wrong_client = {"client_id": "x", "grant_type": "refresh_token", "refresh_token": "y"}
    async with sim_http.post(oc.sim.oc_oauth_url + "/oauth/token", params=wrong_client) as r:
        assert r.status == 401


async def test_without_rotation_the_refresh_token_stays(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    oc = await _oc(sim_factory, sim_http, oc_rotate_refresh=False)
    first = oc.refresh_token
    await oc.refresh()
    assert oc.refresh_token == first
    assert (await oc.refresh(first))[0] == 200


async def test_access_token_required_and_expires(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    oc = await _oc(sim_factory, sim_http, oc_token_ttl_s=30)
    tokens = oc.sim.world.oc.tokens
    now = [1000.0]
    tokens.clock = lambda: now[0]  # stepped, not slept through
    query = {"referenceNumber": "RA-1", "messageId": "m1"}
    status, body = await oc.get("/3pp/returns/v1/query/orders", **query)
    assert status == 401 and body["success"] is False
    await oc.refresh()
    now[0] += 29.9
    assert (await oc.get("/3pp/returns/v1/query/orders", **query))[0] == 200
    now[0] += 0.2  # past the ttl
    assert (await oc.get("/3pp/returns/v1/query/orders", **query))[0] == 401
    await oc.refresh()
    assert (await oc.get("/3pp/returns/v1/query/orders", **query))[0] == 200
    oc.sim.expire_oc_tokens()
    assert (await oc.get("/3pp/returns/v1/query/orders", **query))[0] == 401


def _pending_rma(sim: Simulator) -> dict[str, Any]:
    waiting = {
        r["parentAfterSalesSn"]
        for r in sim.truth_returns("shop-1")
        if r["parentAfterSalesStatus"] == 8 and 10 in r["availableOperateList"]
    }
    return next(r for r in sim.rmas("shop-1") if r["referenceNumber"] in waiting)


async def test_find_rma_and_label_not_ready_then_ready(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    oc = await _oc(sim_factory, sim_http)
    await oc.refresh()
    rma = _pending_rma(oc.sim)
    status, found = await oc.get(
        "/3pp/returns/v1/query/orders", referenceNumber=rma["referenceNumber"], messageId="q1"
    )
    assert status == 200 and found["success"]
    assert found["result"][0]["orderNumber"] == rma["orderNumber"]
    assert set(found) == {
        "requestId",
        "success",
        "hasBusinessException",
        "errorCode",
        "errorMsg",
        "message",
        "result",
        "isFallback",
    }
    _, none = await oc.get(
        "/3pp/returns/v1/query/orders", referenceNumber="RA-nothing", messageId="q2"
    )
    assert none["success"] and none["result"] == []

    labels = []
    for i in range(3):
        _, label = await oc.get(
            "/3pp/returns/v1/query/label", orderNumber=rma["orderNumber"], messageId=f"l{i}"
        )
        labels.append(label)
    not_ready = labels[:2]  # oc_label_ready_after = 2, in both documented shapes
    assert not_ready[0]["success"] is False
    assert not_ready[1]["success"] is True and not_ready[1]["result"]["docUrl"] == ""
    ready = labels[2]["result"]
    assert labels[2]["success"] and ready["docUrl"].startswith("https://")
    assert ready["trackingNumber"] and ready["carrierName"] in {"UPS", "USPS", "FedEx", "DHL"}
    assert ready["referenceNumber"] == rma["referenceNumber"]
    _, unknown = await oc.get("/3pp/returns/v1/query/label", orderNumber="OC0", messageId="l9")
    assert unknown["success"] is False and unknown["hasBusinessException"] is True


async def test_cancel_and_update_tracking_apply_once_per_message_id(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    oc = await _oc(sim_factory, sim_http)
    await oc.refresh()
    rma = _pending_rma(oc.sim)
    update = {
        "messageId": "msg-1",
        "data": {
            "orderNumber": rma["orderNumber"],
            "operation": "UPDATE_TRACKING",
            "trackingNumber": "1ZTRACK0001",
            "carrierName": "UPS",
        },
    }
    _, first = await oc.post(update)
    _, again = await oc.post(update)
    assert first["success"] and again == first  # the same answer, not applied twice
    assert len(oc.sim.oc_pushes()) == 1
    assert oc.sim.oc_pushes()[0]["messageId"] == "msg-1"
    assert oc.sim.oc_pushes()[0]["trackingNumber"] == "1ZTRACK0001"
    cancel = {
        "messageId": "msg-2",
        "data": {"orderNumber": rma["orderNumber"], "operation": "CANCEL"},
    }
    _, cancelled = await oc.post(cancel)
    assert cancelled["success"] and cancelled["result"]["status"] == "CANCELLED"
    _, twice = await oc.post({**cancel, "messageId": "msg-3"})
    assert twice["success"] is False and twice["hasBusinessException"]
    assert [p["operation"] for p in oc.sim.oc_pushes()] == ["UPDATE_TRACKING", "CANCEL"]
    _, bad = await oc.post(
        {
            "messageId": "msg-4",
            "data": {"orderNumber": rma["orderNumber"], "operation": "UPDATE_TRACKING"},
        }
    )
    assert bad["success"] is False
    _, no_id = await oc.post({"data": {"orderNumber": rma["orderNumber"], "operation": "CANCEL"}})
    assert no_id["success"] is False


async def test_rmas_exist_for_the_reconcilers_cases(sim: Simulator) -> None:
    returns = {r["parentAfterSalesSn"]: r for r in sim.truth_returns("shop-1")}
    rmas = sim.rmas("shop-1")
    statuses = {returns[r["referenceNumber"]]["parentAfterSalesStatus"] for r in rmas}
    assert 8 in statuses
    assert statuses <= {2, 6, 7, 8}
    waiting = [
        r
        for r in returns.values()
        if r["parentAfterSalesStatus"] == 8 and 10 in r["availableOperateList"]
    ]
    covered = {r["referenceNumber"] for r in rmas}
    assert sum(r["parentAfterSalesSn"] in covered for r in waiting) >= len(waiting) // 2
