"""Access-token checks against real Postgres: at most one Temu call a day per token, the answer
kept per shop, and a missing scope failing the shop with the API types named."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import cast

import asyncpg
import pytest

from engine.store.token_checks import TokenCheckFailure, TokenChecks
from engine.sync.tokens import MissingScopes, TokenChecker, expires_soon, status_fields
from engine.temu.api import TemuShopApi
from engine.temu.limiter import Lane
from engine.temu.token_info import TokenInfo, needed_scopes

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EXPIRES = datetime(2026, 12, 7, 10, 15, 2, tzinfo=UTC)
ORDERS_ONLY = needed_scopes(orders=True, returns=False, reconciler=False)


class FakeApi:
    def __init__(self, shop_id: str, token: str, scopes: list[str]) -> None:
        self.shop_id = shop_id
        self.token_fingerprint = hashlib.sha256(token.encode()).hexdigest()
        self.scopes = scopes
        self.calls = 0

    async def access_token_info(self, *, lane: Lane) -> TokenInfo:
        self.calls += 1
        raw = {"expiredTime": int(EXPIRES.timestamp()), "apiScopeList": self.scopes}
        return TokenInfo(EXPIRES, frozenset(self.scopes), "42", raw)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def api(fake: FakeApi) -> TemuShopApi:
    return cast(TemuShopApi, fake)


async def test_temu_is_asked_at_most_once_a_day_per_token(pool: asyncpg.Pool) -> None:
    clock = Clock()
    checks = TokenChecks(pool)
    checker = TokenChecker(checks, ORDERS_ONLY, clock=clock)
    shop = FakeApi("us-main", "tok-1", ["bg.order.list.v2.get"])

    first = await checker.require(api(shop))
    assert (shop.calls, first.asked_temu, first.missing) == (1, True, [])
    clock.now = T0 + timedelta(hours=23)
    # A second process (another TokenChecker on the same database) uses the stored answer.
    again = await TokenChecker(TokenChecks(pool), ORDERS_ONLY, clock=clock).require(api(shop))
    assert (shop.calls, again.asked_temu, again.expires_at) == (1, False, EXPIRES)

    clock.now = T0 + timedelta(hours=24, seconds=1)
    await checker.require(api(shop))
    assert shop.calls == 2

    replaced = FakeApi("us-main", "tok-2", ["bg.order.list.v2.get"])  # a new token in config
    await checker.require(api(replaced))
    assert replaced.calls == 1

    stored = await checks.get("us-main")
    assert stored is not None
    assert stored.checked_at == clock.now
    assert stored.token_sha256 == replaced.token_fingerprint
    assert stored.payload["apiScopeList"] == ["bg.order.list.v2.get"]
    tokens = await pool.fetchval("SELECT count(*) FROM token_checks WHERE payload::text ~ 'tok-'")
    assert tokens == 0  # the token itself is never stored


async def test_a_missing_scope_fails_the_shop_naming_the_api_types(pool: asyncpg.Pool) -> None:
    needed = needed_scopes(orders=True, returns=True, reconciler=False)
    checker = TokenChecker(TokenChecks(pool), needed, clock=Clock())
    shop = FakeApi("eu-2", "tok-3", ["bg.order.list.v2.get", "bg.aftersales.aftersales.list.get"])
    with pytest.raises(MissingScopes) as exc:
        await checker.require(api(shop))
    assert exc.value.missing == [
        "bg.aftersales.parentaftersales.list.get",
        "bg.aftersales.parentreturnorder.get",
    ]
    assert "bg.aftersales.parentaftersales.list.get" in str(exc.value)
    assert "eu-2" in str(exc.value)


async def test_status_fields(pool: asyncpg.Pool) -> None:
    checks = TokenChecks(pool)
    assert status_fields(await checks.get("nobody"), ORDERS_ONLY) == {
        "token_expires_at": None,
        "token_missing_scopes": None,
    }
    await TokenChecker(checks, ORDERS_ONLY, clock=Clock()).check(api(FakeApi("s", "t", [])))
    check = await checks.get("s")
    assert status_fields(check, ORDERS_ONLY) == {
        "token_expires_at": "2026-12-07T10:15:02Z",
        "token_missing_scopes": ["bg.order.list.v2.get"],
    }
    assert [c.shop_id for c in await checks.all()] == ["s"]
    assert not expires_soon(check, EXPIRES - timedelta(days=15))
    assert expires_soon(check, EXPIRES - timedelta(days=13))


async def test_a_refusal_holding_a_nul_is_still_recorded(pool: asyncpg.Pool) -> None:
    """Temu's error words may carry U+0000 (the simulator's nul_in_errors mode); the refusal
    row (which ends the webhook receiver's 503s for unknown mallIds) must still be written."""
    checks = TokenChecks(pool)
    await checks.save_failure(
        TokenCheckFailure("shop-1", "f" * 64, "3000034 token expired\x00 (C string)", T0)
    )
    (failure,) = await checks.failures()
    assert failure.shop_id == "shop-1" and failure.error == "3000034 token expired\ufffd (C string)"
