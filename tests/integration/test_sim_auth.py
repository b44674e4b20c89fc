"""The simulator's gateway checks: signature, timestamp, app and token, in Temu's order."""

from __future__ import annotations

import time

import aiohttp
import orjson

from engine.sim import SimApp, SimConfig, SimShop, Simulator
from engine.sim.signature import expected_sign, sign_matches
from tests.fixtures_sim import SimFactory, TemuCaller

VECTOR_SECRET = "c7e0a1a63542be4de3cb5488f9fba8149e8fc290"
VECTOR_APP = "f9d5cc9313893a20d5aa85c654e8f503"
VECTOR_TOKEN = "2nifvmpyymvypwmcms5ct4uqqudrwgpmzbcnmkt1jzjkuaf3x56iixym"
# Exactly the bytes of temu-api.md's test vector, nested key order included.
VECTOR_BODY = (
    b'{"access_token":"' + VECTOR_TOKEN.encode() + b'","app_key":"' + VECTOR_APP.encode() + b'",'
    b'"data_type":"JSON","sendType":0,"timestamp":1711009072,'
    b'"type":"bg.logistics.shipment.confirm","sendRequestList":[{"orderSendInfoList":'
    b'[{"quantity":1,"orderSn":"211-21905473070712792","parentOrderSn":'
    b'"PO-211-21905452099192792","goodsId":601099548666279,"skuId":17592352673534}],'
    b'"carrierId":"699272611","trackingNumber":"270324232756"}]}'
)
VECTOR_SIGN = "4CCF219942D4180C6DDA3CE36C1B838F"


def test_spec_test_vector_verifies() -> None:
    params = orjson.loads(VECTOR_BODY)
    assert expected_sign(params, VECTOR_SECRET) == VECTOR_SIGN
    assert sign_matches({**params, "sign": VECTOR_SIGN}, VECTOR_SECRET)
    assert not sign_matches({**params, "sign": VECTOR_SIGN.lower()}, VECTOR_SECRET)
    # Nested key order is part of what was signed.
    reordered = orjson.loads(
        VECTOR_BODY.replace(b'{"quantity":1,', b"{").replace(
            b'"skuId":17592352673534}', b'"skuId":17592352673534,"quantity":1}'
        )
    )
    assert not sign_matches({**reordered, "sign": VECTOR_SIGN}, VECTOR_SECRET)


async def _vector_sim(sim_factory: SimFactory) -> Simulator:
    config = SimConfig(
        apps=(SimApp(VECTOR_APP, VECTOR_SECRET),),
        shops=(SimShop("vector", VECTOR_APP, VECTOR_TOKEN, orders=10, returns=2),),
    )
    return await sim_factory(config)


async def test_vector_over_http_passes_the_signature_check(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:

    sim = await _vector_sim(sim_factory)
    caller = TemuCaller(sim_http, sim)
    signed = VECTOR_BODY[:-1] + b',"sign":"' + VECTOR_SIGN.encode() + b'"}'
    # The signature is checked before the timestamp: the 2024 timestamp is what fails.
    assert (await caller.raw(signed))["errorCode"] == 3000012
    tampered = signed.replace(b'"sendType":0', b'"sendType":1')
    assert (await caller.raw(tampered))["errorCode"] == 3000001


async def test_signed_request_with_non_ascii_and_nested_values_is_accepted(
    sim_caller: TemuCaller,
) -> None:
    answer = await sim_caller.call(
        "bg.order.list.v2.get",
        pageNumber=1,
        pageSize=5,
        parentOrderSnList=['PO-211-Köln-"quoted"', "儿童"],
    )
    assert answer["success"], answer
    assert answer["result"] == {"totalItemNum": 0, "pageItems": []}


async def test_gateway_error_codes(sim_caller: TemuCaller, sim: Simulator) -> None:
    base = sim_caller.params("bg.logistics.companies.get")
    secret = sim_caller.secret(base["app_key"])

    async def code(params: dict[str, object], *, secret_: str = secret) -> int:
        return int((await sim_caller.post(params, secret=secret_))["errorCode"])

    assert await code(base) == 1000000
    assert await code(base, secret_="wrong-secret") == 3000001
    now = int(time.time())
    assert await code({**base, "timestamp": now - 301}) == 3000012
    assert await code({**base, "timestamp": now + 400}) == 3000011
    assert await code({**base, "app_key": "no-such-app"}, secret_="x") == 3000026
    no_app = {k: v for k, v in base.items() if k != "app_key"}
    assert await code(no_app) == 3000025
    assert await code({**base, "access_token": "no-such-token"}) == 3000031
    no_token = {k: v for k, v in base.items() if k != "access_token"}
    assert await code(no_token) == 3000030
    assert await code({**base, "type": "bg.no.such.api"}) == 3000003
    assert await code({**base, "data_type": "XML"}) == 3000014
    unsigned = orjson.dumps(base)
    assert (await sim_caller.raw(unsigned))["errorCode"] == 3000040
    stats = sim.stats(arrivals=False)["apps"]["sim-app-1"]
    assert stats["accepted"] == 1  # rejected requests never count against the rate limit


async def test_token_of_another_app_and_revoked_token(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:

    sim = await sim_factory(SimConfig.default(orders=20, returns=5, shops=2, apps=2))
    caller = TemuCaller(sim_http, sim)
    own = caller.params("bg.logistics.companies.get", shop=0)
    other_token = sim.config.shops[1].access_token
    assert sim.config.shops[1].app_key != own["app_key"]
    mismatch = await caller.post({**own, "access_token": other_token})
    assert mismatch["errorCode"] == 3000033
    assert (await caller.post(own))["success"]
    assert sim.revoke_token(own["access_token"])
    revoked = await caller.post(caller.params("bg.logistics.companies.get", shop=0))
    assert revoked["errorCode"] == 3000034
    assert not revoked["success"]
    # The other shop is untouched.
    assert (await caller.call("bg.logistics.companies.get", shop=1))["success"]


async def test_envelope_shape(sim_caller: TemuCaller) -> None:
    answer = await sim_caller.call("temu.aftersales.carrier.get", returnWarehouseRegionId1=211)
    assert set(answer) == {"success", "errorCode", "errorMsg", "requestId", "result"}
    assert answer["errorCode"] == 1000000 and answer["requestId"]
    names = {c["carrierName"] for c in answer["result"]["carrierDTOList"]}
    assert {"UPS", "USPS", "FedEx", "DHL"} <= names
    companies = await sim_caller.call("bg.logistics.companies.get")
    providers = companies["result"]["logisticsServiceProviderList"]
    assert {p["logisticsServiceProviderName"] for p in providers} == names
    missing = await sim_caller.call("temu.aftersales.carrier.get")
    assert missing["errorCode"] == 3000000
