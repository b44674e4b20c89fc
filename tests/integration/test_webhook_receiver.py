"""The webhook endpoint over real HTTP with a real Postgres: what Temu sees and what is stored."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from engine.daemon.webhooks import create_webhook_app
from engine.store.events import EventStore
from engine.store.pool import create_pool
from engine.temu import webhooks as wh
from tests.silent_pg import SilentPostgres

APP = "app-1"
SECRET = "0123456789abcdef0123456789abcdef01234567"
MALLS = {(APP, 1001): "shop-1", (APP, 1002): "shop-2"}
EVENTS = [wh.ORDER_STATUS, wh.AFTERSALES_STATUS]


class Counter:
    def __init__(self) -> None:
        self.seen: collections.Counter[tuple[str, str]] = collections.Counter()
        self.answers: list[tuple[int, float]] = []

    def on_event(self, code: str, outcome: str) -> None:
        self.seen[(code, outcome)] += 1

    def on_answer(self, status: int, seconds: float) -> None:
        self.answers.append((status, seconds))


def message(
    payload: dict[str, Any],
    *,
    code: str = wh.ORDER_STATUS,
    secret: str = SECRET,
    app_key: str = APP,
    sign_secret: str | None = None,
    ext: str | None = "{}",
) -> tuple[dict[str, str], bytes]:
    plain = orjson.dumps(payload).decode()
    return signed(
        plain, code=code, secret=secret, app_key=app_key, sign_secret=sign_secret, ext=ext
    )


def signed(
    plain: str,
    *,
    code: str = wh.ORDER_STATUS,
    secret: str = SECRET,
    app_key: str = APP,
    sign_secret: str | None = None,
    ext: str | None = None,
    ts: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """A POST carrying ``plain`` (any text) as its encrypted eventData, signed."""
    ts = ts or str(int(time.time() * 1000))
    sig = wh.signature(sign_secret or secret, plain, app_key, code, ts, None)
    headers = {wh.APP_KEY: app_key, wh.EVENT_CODE: code, wh.TIMESTAMP: ts, wh.SIGNATURE: sig}
    if ext is not None:
        headers[wh.EXT_PARAM] = ext
    body = orjson.dumps({"eventData": wh.encrypt_event_data(plain, secret)})
    return headers, body


ORDER = {"mallId": 1001, "parentOrderSn": "PO-1", "orderStatus": 2, "updateTime": 1_760_000_000}


async def shops_for(app_key: str, mall: int | None) -> list[str]:
    if mall is None:
        return sorted(shop for (app, _), shop in MALLS.items() if app == app_key)
    shop = MALLS.get((app_key, mall))
    return [] if shop is None else [shop]


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` served as the daemon serves it, on a free port: the events URL."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/temu/events"
    finally:
        await runner.cleanup()


@pytest.fixture
async def endpoint(pool: asyncpg.Pool) -> AsyncIterator[tuple[str, Counter, list[int]]]:
    counter = Counter()
    woken: list[int] = []
    app = create_webhook_app(
        apps={APP: SECRET},
        shops_for=shops_for,
        events=EVENTS,
        store=EventStore(pool),
        observer=counter,
        on_stored=lambda: woken.append(1),
        insert_timeout_s=0.2,
    )
    async with serving(app) as url:
        yield url, counter, woken


async def post(url: str, headers: dict[str, str], body: bytes) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=body, headers={**headers, "Content-Type": "application/json"}) as r,
    ):
        return r.status


async def rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT shop_id, code, parent_order_sn, payload FROM webhook_events")


async def test_a_good_event_is_stored_once(
    endpoint: tuple[str, Counter, list[int]], pool: asyncpg.Pool
) -> None:
    url, counter, woken = endpoint
    headers, body = message(ORDER)
    assert await post(url, headers, body) == 200
    assert await post(url, headers, body) == 200  # Temu's re-send of the same message
    [row] = await rows(pool)
    assert (row["shop_id"], row["code"], row["parent_order_sn"]) == (
        "shop-1",
        wh.ORDER_STATUS,
        "PO-1",
    )
    assert row["payload"] == ORDER
    assert counter.seen[(wh.ORDER_STATUS, "stored")] == 1
    assert counter.seen[(wh.ORDER_STATUS, "duplicate")] == 1
    assert woken == [1], "the consumer is woken for the new event only"
    assert [status for status, _ in counter.answers] == [200, 200]
    assert all(seconds > 0 for _, seconds in counter.answers)


@pytest.mark.parametrize(
    ("kwargs", "status", "outcome"),
    [
        ({"sign_secret": "f" * 40}, 401, "bad_signature"),
        ({"app_key": "other-app"}, 401, "bad_signature"),
        ({"secret": "fedcba9876543210" + "0" * 24}, 400, "bad_body"),  # wrong key: no decrypt
    ],
)
async def test_bad_messages_change_nothing(
    endpoint: tuple[str, Counter, list[int]],
    pool: asyncpg.Pool,
    kwargs: dict[str, Any],
    status: int,
    outcome: str,
) -> None:
    url, counter, _ = endpoint
    headers, body = message(ORDER, **kwargs)
    assert await post(url, headers, body) == status
    assert await rows(pool) == []
    assert counter.seen[(wh.ORDER_STATUS, outcome)] == 1
    assert [a[0] for a in counter.answers] == [status], "refusals are timed too"


async def test_unusable_bodies_are_400(
    endpoint: tuple[str, Counter, list[int]], pool: asyncpg.Pool
) -> None:
    url, counter, _ = endpoint
    headers, _ = message(ORDER)
    assert await post(url, headers, b"not json") == 400
    assert await post(url, headers, b'{"eventData": 5}') == 400
    assert await post(url, headers, b'{"eventData": "' + b"A" * 200_000 + b'"}') == 400
    assert await rows(pool) == []
    assert [a[0] for a in counter.answers] == [400] * 3


async def test_an_event_without_a_mall_is_a_re_read_hint_for_every_shop_of_its_app(
    endpoint: tuple[str, Counter, list[int]], pool: asyncpg.Pool
) -> None:
    """temu-webhooks.md: unknown shapes are a hint for a wider re-read, never an error. Without
    a mallId the shop cannot be told, so each shop of the app gets it (its recent window); a
    re-send stores nothing more."""
    url, counter, woken = endpoint
    # Well signed, decrypts, but the plaintext is not a JSON object, or not JSON at all.
    odd = signed("[1]", ts="1760000000000")
    assert await post(url, *odd) == 200
    assert await post(url, *signed("status=2&sn=PO-7", ts="1760000000001")) == 200
    no_mall = message({"parentOrderSn": "PO-7", "updateTime": 1_760_000_000})
    assert await post(url, *no_mall) == 200
    assert await post(url, *no_mall) == 200  # Temu's re-send
    got = sorted((r["shop_id"], r["parent_order_sn"] or "") for r in await rows(pool))
    assert got == [(shop, sn) for shop in ("shop-1", "shop-2") for sn in ("", "", "PO-7")]
    kept = sorted(
        repr(r["payload"]["eventData"]) for r in await rows(pool) if r["parent_order_sn"] is None
    )
    assert kept == ["'status=2&sn=PO-7'"] * 2 + ["[1]"] * 2, "kept as sent, for each shop"
    assert counter.seen[(wh.ORDER_STATUS, "stored")] == 3
    assert counter.seen[(wh.ORDER_STATUS, "duplicate")] == 1
    assert counter.seen[(wh.ORDER_STATUS, "unknown_mall")] == 0
    assert woken == [1, 1, 1]


async def test_unknown_mall_and_unsubscribed_code_are_acknowledged_and_ignored(
    endpoint: tuple[str, Counter, list[int]], pool: asyncpg.Pool
) -> None:
    url, counter, _ = endpoint
    assert await post(url, *message({**ORDER, "mallId": 999})) == 200
    assert await post(url, *message({"mallId": 1001}, code=wh.TEST_EVENT)) == 200
    assert await post(url, *message({**ORDER, "mallId": 1001}, app_key="other-app")) == 401
    assert await rows(pool) == []
    assert counter.seen[(wh.ORDER_STATUS, "unknown_mall")] == 1
    assert counter.seen[(wh.TEST_EVENT, "not_subscribed")] == 1


async def test_a_database_that_cannot_store_in_time_gets_503(
    endpoint: tuple[str, Counter, list[int]], pool: asyncpg.Pool
) -> None:
    url, counter, _ = endpoint
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        assert await post(url, *message(ORDER)) == 503
        assert time.monotonic() - started < 0.5
    assert counter.seen[(wh.ORDER_STATUS, "store_failed")] == 1
    assert counter.answers[0][0] == 503
    # Temu's retry then lands.
    assert await post(url, *message(ORDER)) == 200
    assert len(await rows(pool)) == 1


async def test_answers_stay_well_under_500_ms(
    endpoint: tuple[str, Counter, list[int]], pool: asyncpg.Pool
) -> None:
    url, _, _ = endpoint
    times: list[float] = []
    async with aiohttp.ClientSession() as s:

        async def one(i: int) -> None:
            headers, body = message({**ORDER, "parentOrderSn": f"PO-{i}"})
            t0 = time.monotonic()
            async with s.post(url, data=body, headers=headers) as r:
                assert r.status == 200
            times.append(time.monotonic() - t0)

        for start in range(0, 300, 10):  # ten concurrent deliveries at a time
            await asyncio.gather(*(one(i) for i in range(start, start + 10)))
    times.sort()
    p99 = times[int(len(times) * 0.99) - 1]
    assert p99 < 0.25, f"p99 {p99 * 1000:.0f} ms"
    assert await pool.fetchval("SELECT count(*) FROM webhook_events") == 300


async def test_a_mall_not_known_yet_is_503_so_temu_delivers_it_again(pool: asyncpg.Pool) -> None:
    from engine.app.webhooks import MallNotKnownYet

    async def not_yet(app_key: str, mall: int | None) -> list[str]:
        raise MallNotKnownYet("shop-1 has no token check yet")

    counter = Counter()
    app = create_webhook_app(
        apps={APP: SECRET},
        shops_for=not_yet,
        events=EVENTS,
        store=EventStore(pool),
        observer=counter,
    )
    async with serving(app) as url:
        assert await post(url, *message(ORDER)) == 503
    assert await rows(pool) == []
    assert counter.seen[(wh.ORDER_STATUS, "mall_not_yet")] == 1


async def test_a_silent_database_still_gets_its_503_on_time(
    pg_url: str, schema: str, pool: asyncpg.Pool
) -> None:
    """A frozen Postgres host answers nothing, not even the cancel of the timed-out INSERT:
    the answer must not wait for that cancel (asyncpg's own timeout is a minute away)."""
    async with SilentPostgres(pg_url).running() as silent:
        proxied = await create_pool(
            silent.url, schema, min_size=1, max_size=2, statement_timeout_s=60.0
        )
        try:
            counter = Counter()
            app = create_webhook_app(
                apps={APP: SECRET},
                shops_for=shops_for,
                events=EVENTS,
                store=EventStore(proxied),
                observer=counter,
                insert_timeout_s=0.2,
            )
            async with serving(app) as url:
                silent.freeze()
                started = time.monotonic()
                assert await post(url, *message(ORDER)) == 503
                assert time.monotonic() - started < 0.5
                silent.thaw()
                assert counter.seen[(wh.ORDER_STATUS, "store_failed")] == 1
                # Temu's retry lands once the database answers again, stored once.
                assert await post(url, *message(ORDER)) == 200
        finally:
            proxied.terminate()
    assert len(await rows(pool)) == 1
