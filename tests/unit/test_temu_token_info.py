"""bg.open.accesstoken.info.get: the call as sent over real HTTP, parsing of its answer, and
which API types a configuration needs that a token lacks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from engine.config import AppSettings, Secret
from engine.temu.api import TemuShopApi
from engine.temu.errors import MalformedResponse, ShopAuthError
from engine.temu.limiter import AppPacer, Lane
from engine.temu.signing import sign
from engine.temu.stats import CallStats
from engine.temu.token_info import (
    ACCESS_TOKEN_INFO,
    RECONCILER_SCOPES,
    missing_scopes,
    needed_scopes,
    parse_token_info,
)
from engine.temu.transport import TemuTransport

SECRET = "app-secret-5d1c0a9b8e7f"
TOKEN = "shop-token-0f9e8d7c6b5a"
EXPIRES = 1_796_638_502  # 2026-12-07T10:15:02Z
GRANTED = ["bg.order.list.v2.get", "bg.aftersales.parentaftersales.list.get"]


class TinyTemu:
    """A router that answers one API type as temu-api.md documents it, and records requests."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answer: dict[str, Any] = {
            "success": True,
            "errorCode": 1000000,
            "requestId": "r-1",
            "result": {
                "expiredTime": EXPIRES,
                "apiScopeList": GRANTED,
                "mallId": 634418212233,
                "appSubscribeEventCodeList": [],
                "appSubscribeStatus": 0,
                "authEventCodeList": [],
            },
        }

    async def router(self, request: web.Request) -> web.Response:
        self.requests.append(orjson.loads(await request.read()))
        return web.Response(body=orjson.dumps(self.answer), content_type="application/json")


@pytest.fixture
async def temu() -> AsyncIterator[tuple[TinyTemu, TemuShopApi]]:
    fake = TinyTemu()
    app = web.Application()
    app.router.add_post("/openapi/router", fake.router)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    settings = AppSettings(
        app_key="ak-1",
        app_secret=Secret(SECRET),
        base_url=f"http://127.0.0.1:{port}/openapi/router",
        max_attempts=1,
    )
    async with aiohttp.ClientSession() as session:
        transport = TemuTransport(session, settings, AppPacer(100), CallStats())
        yield fake, TemuShopApi(transport, "us-main", TOKEN)
    await runner.cleanup()


async def test_the_call_is_signed_with_the_shops_token_and_no_params_of_its_own(
    temu: tuple[TinyTemu, TemuShopApi],
) -> None:
    fake, api = temu
    info = await api.access_token_info(lane=Lane.INCREMENTAL)
    assert info.expires_at == datetime(2026, 12, 7, 10, 15, 2, tzinfo=UTC)
    assert info.api_scopes == frozenset(GRANTED)
    assert info.mall_id == "634418212233"
    (sent,) = fake.requests
    assert sent["type"] == ACCESS_TOKEN_INFO
    assert sent["access_token"] == TOKEN
    assert sent["sign"] == sign(sent, SECRET)
    own = set(sent) - {"type", "app_key", "access_token", "timestamp", "data_type", "sign"}
    assert own <= {"version"}, own


async def test_an_expired_token_is_a_shop_auth_error(temu: tuple[TinyTemu, TemuShopApi]) -> None:
    fake, api = temu
    fake.answer = {
        "success": False,
        "errorCode": 3000034,
        "errorMsg": "access_token expired",
        "requestId": "r-2",
        "result": None,
    }
    with pytest.raises(ShopAuthError) as exc:
        await api.access_token_info(lane=Lane.INCREMENTAL)
    assert exc.value.shop_id == "us-main"


async def test_an_answer_without_a_scope_list_is_malformed(
    temu: tuple[TinyTemu, TemuShopApi],
) -> None:
    fake, api = temu
    fake.answer["result"] = {"expiredTime": EXPIRES}
    with pytest.raises(MalformedResponse) as exc:
        await api.access_token_info(lane=Lane.INCREMENTAL)
    assert exc.value.shop_id == "us-main"
    assert "apiScopeList" in str(exc.value)


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (EXPIRES, datetime(2026, 12, 7, 10, 15, 2, tzinfo=UTC)),
        (EXPIRES * 1000, datetime(2026, 12, 7, 10, 15, 2, tzinfo=UTC)),  # milliseconds
        (str(EXPIRES), datetime(2026, 12, 7, 10, 15, 2, tzinfo=UTC)),  # a numeric string
        (None, None),
        (0, None),
        ("soon", None),
        (True, None),
    ],
)
def test_expiry_forms(sent: Any, expected: datetime | None) -> None:
    assert parse_token_info({"expiredTime": sent, "apiScopeList": []}).expires_at == expected


def test_junk_inside_the_scope_list_is_ignored() -> None:
    info = parse_token_info({"apiScopeList": ["a.b", None, 3, " c.d ", ""], "mallId": None})
    assert info.api_scopes == frozenset({"a.b", "c.d"})
    assert info.mall_id is None


def test_missing_scopes_names_what_the_configuration_needs_and_was_not_granted() -> None:
    orders_only = needed_scopes(orders=True, returns=False, reconciler=False)
    assert missing_scopes(GRANTED, orders_only) == []
    everything = needed_scopes(orders=True, returns=True, reconciler=True, webhooks=True)
    missing = missing_scopes(GRANTED, everything)
    assert missing == sorted(missing)
    assert "bg.order.list.v2.get" not in missing
    assert "temu.aftersales.upload.returnlabel" in missing
    assert "bg.tmc.message.update" in missing
    assert set(RECONCILER_SCOPES) - set(GRANTED) <= set(missing)
