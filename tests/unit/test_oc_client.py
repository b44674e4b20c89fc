"""Orange Connex client against aioresponses: token lifecycle, retries, messageIds, secrecy."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from engine.config import OrangeConnexSettings, Secret
from engine.oc import (
    MemoryTokenStore,
    OCAuthError,
    OCBusinessError,
    OCClient,
    OCError,
    StoredTokens,
)

OAUTH = re.compile(r"^http://oc\.test/oauth/token\?.*$")
ORDERS = re.compile(r"^http://oc\.test/openapi/3pp/returns/v1/query/orders\?.*$")
LABEL = re.compile(r"^http://oc\.test/openapi/3pp/returns/v1/query/label\?.*$")
CANCEL = "http://oc.test/openapi/3pp/returns/v1/cancel/rma"

SEED = "RT-SEED-0000"
CLIENT_KEY = "CK-SECRET-1111"


def settings(**kw: Any) -> OrangeConnexSettings:
    base: dict[str, Any] = {
        "enabled": True,
        "base_url": "http://oc.test/openapi/",
        "oauth_base_url": "http://oc.test",
        "client_id": "cid",
        "client_key": Secret(CLIENT_KEY),
        "refresh_token": Secret(SEED),
        "qps": 1000.0,
        "timeout_s": 5.0,
    }
    base.update(kw)
    return OrangeConnexSettings(**base)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Env:
    """A client wired to a fake clock, an instant sleep and a request log."""

    def __init__(self, session: aiohttp.ClientSession, mock: aioresponses) -> None:
        self.session = session
        self.mock = mock
        self.clock = Clock()
        self.sleeps: list[float] = []
        self.store = MemoryTokenStore()
        self.log: list[tuple[str, URL, dict[str, Any]]] = []

    async def _sleep(self, delay: float) -> None:
        self.sleeps.append(delay)

    def client(self, **kw: Any) -> OCClient:
        opts: dict[str, Any] = {"clock": self.clock, "sleep": self._sleep, "rng": lambda: 1.0}
        opts.update(kw)
        s = opts.pop("settings", settings())
        return OCClient(self.session, s, self.store, **opts)

    def rec(self, name: str) -> Callable[..., None]:
        def cb(url: URL, **kwargs: Any) -> None:
            self.log.append((name, url, kwargs))

        return cb

    def token(self, access: str, refresh: str | None = None, expires_in: int = 3600) -> None:
        body: dict[str, Any] = {"access_token": access, "expires_in": expires_in}
        if refresh is not None:
            body["refresh_token"] = refresh
        body["token_type"] = "bearer"
        self.mock.post(OAUTH, payload=body, callback=self.rec("oauth"))

    def calls(self, name: str) -> list[tuple[URL, dict[str, Any]]]:
        return [(u, k) for n, u, k in self.log if n == name]


def ok(result: Any) -> dict[str, Any]:
    return {
        "requestId": "r-1",
        "success": True,
        "hasBusinessException": False,
        "errorCode": None,
        "errorMsg": None,
        "message": "ok",
        "result": result,
        "isFallback": False,
        "someNewField": 1,
    }


def fail(code: str, msg: str) -> dict[str, Any]:
    return {"success": False, "hasBusinessException": True, "errorCode": code, "errorMsg": msg}


LABEL_RESULT = {
    "orderNumber": "OCS1",
    "referenceNumber": "PO-1",
    "serviceType": "RETURN",
    "trackingNumber": "1Z999",
    "carrierName": "UPS",
    "docUrl": "https://oc.example/label.pdf",
    "qrCodeUrl": "https://oc.example/qr.png",
    "qrLink": "https://oc.example/q",
}


@pytest.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    # aioresponses 0.7.9 builds ClientResponse without the stream_writer that aiohttp 3.14
    # requires; give it a stand-in for the duration of the test.
    original = aiohttp.ClientResponse.__init__

    def init(self: aiohttp.ClientResponse, method: str, url: URL, **kw: Any) -> None:
        kw.setdefault("stream_writer", SimpleNamespace(output_size=0))
        original(self, method, url, **kw)

    monkeypatch.setattr(aiohttp.ClientResponse, "__init__", init)
    async with aiohttp.ClientSession() as session:
        with aioresponses() as mock:
            yield Env(session, mock)


async def test_refresh_persists_rotated_tokens_before_use(env: Env) -> None:
    events: list[str] = []
    saves = env.store.save

    async def save(*args: Any) -> None:
        events.append("save")
        await saves(*args)

    env.store.save = save  # type: ignore[method-assign]
    env.token("AT-1", "RT-2")

    def api(url: URL, **kwargs: Any) -> None:
        events.append("call")
        env.log.append(("label", url, kwargs))

    env.mock.get(LABEL, payload=ok(LABEL_RESULT), callback=api)
    client = env.client()

    label = await client.query_label("OCS1")

    assert label is not None
    assert label.doc_url == "https://oc.example/label.pdf"
    assert (label.tracking_number, label.carrier_name) == ("1Z999", "UPS")
    assert label.raw["qrLink"] == "https://oc.example/q"
    assert events == ["save", "call"]
    assert await env.store.get("cid") == StoredTokens("RT-2", "AT-1", env.clock.now + 3600)
    ((oauth_url, _),) = env.calls("oauth")
    assert oauth_url.query["refresh_token"] == SEED
    assert oauth_url.query["grant_type"] == "refresh_token"
    assert oauth_url.query["client_id"] == "cid"
    ((url, kwargs),) = env.calls("label")
    assert kwargs["headers"]["Access-Token"] == "AT-1"
    assert kwargs["headers"]["clientKey"] == CLIENT_KEY
    assert url.query["orderNumber"] == "OCS1"
    assert url.query["messageId"]
    assert client.token_refreshes == 1
    assert client.calls == 1


async def test_restart_uses_the_stored_rotated_refresh_token(env: Env) -> None:
    env.token("AT-1", "RT-2")
    env.mock.get(ORDERS, payload=ok([]), repeat=True)
    await env.client().query_orders("PO-1")

    # A new process, same store, after the access token expired.
    env.clock.now += 7200
    env.token("AT-2", "RT-3")
    restarted = env.client()
    assert await restarted.query_orders("PO-1") == []

    second = env.calls("oauth")[1][0]
    assert second.query["refresh_token"] == "RT-2"
    assert (await env.store.get("cid")) == StoredTokens("RT-3", "AT-2", env.clock.now + 3600)


async def test_restart_with_a_valid_stored_access_token_needs_no_refresh(env: Env) -> None:
    env.store = MemoryTokenStore({"cid": StoredTokens("RT-9", "AT-9", env.clock.now + 1800)})
    env.mock.get(ORDERS, payload=ok([]), callback=env.rec("orders"))
    client = env.client()
    await client.query_orders("PO-1")
    assert env.calls("oauth") == []
    assert env.calls("orders")[0][1]["headers"]["Access-Token"] == "AT-9"
    assert client.token_refreshes == 0


async def test_refresh_ahead_of_expiry(env: Env) -> None:
    env.token("AT-1", "RT-2", expires_in=3600)
    env.mock.get(ORDERS, payload=ok([]), repeat=True, callback=env.rec("orders"))
    client = env.client()
    start = env.clock.now
    await client.query_orders("a")
    env.clock.now = start + 3600 - 61
    await client.query_orders("b")
    assert client.token_refreshes == 1

    env.clock.now = start + 3600 - 59  # inside the 60 s margin: refresh before calling
    env.token("AT-2", "RT-3")
    await client.query_orders("c")
    assert client.token_refreshes == 2
    assert env.calls("oauth")[1][0].query["refresh_token"] == "RT-2"
    assert [k["headers"]["Access-Token"] for _, k in env.calls("orders")] == [
        "AT-1",
        "AT-1",
        "AT-2",
    ]


async def test_short_lived_tokens_are_not_refreshed_on_every_call(env: Env) -> None:
    env.token("AT-1", "RT-2", expires_in=30)
    env.mock.get(ORDERS, payload=ok([]), repeat=True)
    client = env.client()
    for _ in range(3):
        await client.query_orders("a")
    assert client.token_refreshes == 1


async def test_http_401_refreshes_once_and_retries(env: Env) -> None:
    env.token("AT-1", "RT-2")
    env.mock.get(LABEL, status=401, body=b"", callback=env.rec("label"))
    env.token("AT-2", "RT-3")
    env.mock.get(LABEL, payload=ok(LABEL_RESULT), callback=env.rec("label"))
    client = env.client()

    assert await client.query_label("OCS1") is not None
    tokens = [k["headers"]["Access-Token"] for _, k in env.calls("label")]
    assert tokens == ["AT-1", "AT-2"]
    assert env.calls("oauth")[1][0].query["refresh_token"] == "RT-2"
    assert client.auth_retries == 1
    assert env.sleeps == []  # an auth retry is immediate, not a backoff


async def test_expired_token_error_code_refreshes_once(env: Env) -> None:
    env.token("AT-1", "RT-2")
    env.mock.get(ORDERS, payload=fail("401001", "Access token expired"))
    env.token("AT-2", "RT-3")
    env.mock.get(ORDERS, payload=ok([{"orderNumber": "OCS1", "status": 3}]))
    client = env.client()
    rmas = await client.query_orders("PO-1")
    assert [(r.order_number, r.status, r.tracking_number) for r in rmas] == [("OCS1", "3", None)]
    assert client.token_refreshes == 2


@pytest.mark.parametrize(
    ("code", "msg"),
    [
        ("TOKEN_EXPIRE", "please refresh"),
        ("ACCESS_TOKEN_EXPIRE", ""),
        ("10001", "Token has expired"),
        ("BIZ_ERROR", "invalid token"),
        ("401", "unauthenticated"),
    ],
)
async def test_every_spelling_of_a_bad_token_refreshes_once(env: Env, code: str, msg: str) -> None:
    env.token("AT-1", "RT-2")
    env.mock.get(ORDERS, payload=fail(code, msg), callback=env.rec("orders"))
    env.token("AT-2", "RT-3")
    env.mock.get(ORDERS, payload=ok([]), callback=env.rec("orders"))
    client = env.client()
    assert await client.query_orders("PO-1") == []
    assert [k["headers"]["Access-Token"] for _, k in env.calls("orders")] == ["AT-1", "AT-2"]
    assert client.auth_retries == 1


async def test_a_business_error_that_is_not_about_the_token_is_no_refresh(env: Env) -> None:
    env.token("AT-1")
    env.mock.get(ORDERS, payload=fail("LABEL_EXPIRED", "the label expired"))
    client = env.client()
    with pytest.raises(OCBusinessError):
        await client.query_orders("PO-1")
    assert client.auth_retries == 0 and len(env.calls("oauth")) == 1


async def test_second_rejection_after_refresh_is_an_auth_error(env: Env) -> None:
    env.token("AT-1", "RT-2")
    env.token("AT-2", "RT-3")
    env.mock.get(ORDERS, status=401, repeat=True)
    with pytest.raises(OCAuthError):
        await env.client().query_orders("PO-1")
    assert len(env.calls("oauth")) == 2


async def test_concurrent_callers_share_one_refresh(env: Env) -> None:
    async def slow_oauth(url: URL, **kwargs: Any) -> CallbackResult:
        env.log.append(("oauth", url, kwargs))
        await asyncio.sleep(0.02)
        n = len(env.calls("oauth"))
        return CallbackResult(payload={"access_token": f"AT-{n}", "refresh_token": f"RT-{n + 1}"})

    env.mock.post(OAUTH, callback=slow_oauth, repeat=True)
    env.mock.get(ORDERS, payload=ok([]), repeat=True)
    client = env.client()
    await asyncio.gather(*(client.query_orders(str(i)) for i in range(20)))
    assert len(env.calls("oauth")) == 1


async def test_concurrent_401s_share_one_refresh(env: Env) -> None:
    async def oauth(url: URL, **kwargs: Any) -> CallbackResult:
        env.log.append(("oauth", url, kwargs))
        await asyncio.sleep(0.01)
        n = len(env.calls("oauth"))
        return CallbackResult(payload={"access_token": f"AT-{n}", "refresh_token": f"RT-{n + 1}"})

    def api(url: URL, **kwargs: Any) -> CallbackResult:
        if kwargs["headers"]["Access-Token"] == "AT-1":
            return CallbackResult(status=401, body=b"")
        return CallbackResult(payload=ok([]))

    env.mock.post(OAUTH, callback=oauth, repeat=True)
    env.mock.get(ORDERS, callback=api, repeat=True)
    client = env.client()
    await client.query_orders("warm-up")
    await asyncio.gather(*(client.query_orders(str(i)) for i in range(10)))
    oauth_calls = env.calls("oauth")
    # One initial refresh with the seed (its AT-1 is then rejected), then exactly one more.
    assert len(oauth_calls) == 2
    assert oauth_calls[1][0].query["refresh_token"] == "RT-2"


async def test_post_reuses_the_callers_message_id_across_retries(env: Env) -> None:
    env.token("AT-1", "RT-2")
    env.mock.post(CANCEL, status=503, callback=env.rec("cancel"))
    env.mock.post(CANCEL, body=b"<html>gateway</html>", callback=env.rec("cancel"))
    env.mock.post(CANCEL, exception=aiohttp.ServerDisconnectedError(), callback=env.rec("cancel"))
    env.mock.post(CANCEL, payload=ok(None), callback=env.rec("cancel"))
    client = env.client()

    assert await client.cancel_rma("OCS1", message_id="msg-42") == {}
    bodies = [orjson.loads(k["data"]) for _, k in env.calls("cancel")]
    assert len(bodies) == 4
    assert all(
        b == {"messageId": "msg-42", "data": {"orderNumber": "OCS1", "operation": "CANCEL"}}
        for b in bodies
    )
    assert client.retries == 3
    assert env.sleeps == [0.5, 1.0, 2.0]  # rng pinned to 1.0: the jitter's upper bound


async def test_update_tracking_body(env: Env) -> None:
    env.token("AT-1")
    env.mock.post(CANCEL, payload=ok({"accepted": True}), callback=env.rec("cancel"))
    client = env.client()
    result = await client.update_tracking("OCS1", "9400", "USPS", message_id="m-1")
    assert result == {"accepted": True}
    ((_, kwargs),) = env.calls("cancel")
    assert orjson.loads(kwargs["data"]) == {
        "messageId": "m-1",
        "data": {
            "orderNumber": "OCS1",
            "operation": "UPDATE_TRACKING",
            "trackingNumber": "9400",
            "carrierName": "USPS",
        },
    }
    assert kwargs["headers"]["Content-Type"] == "application/json"
    # No rotation offered: the old refresh token is kept.
    stored = await env.store.get("cid")
    assert stored is not None and stored.refresh_token == SEED


async def test_get_retries_reuse_one_message_id_and_each_call_gets_its_own(env: Env) -> None:
    # Spec: a retry of the same logical operation reuses its messageId, also for reads.
    env.token("AT-1", "RT-2")
    env.mock.get(ORDERS, status=500, callback=env.rec("orders"))
    env.mock.get(ORDERS, status=401, callback=env.rec("orders"))
    env.token("AT-2", "RT-3")
    env.mock.get(ORDERS, payload=ok([]), callback=env.rec("orders"))
    env.mock.get(ORDERS, payload=ok([]), callback=env.rec("orders"))
    client = env.client()
    await client.query_orders("PO-1")
    ids = [u.query["messageId"] for u, _ in env.calls("orders")]
    assert len(ids) == 3 and len(set(ids)) == 1, "backoff and auth retries repeat the id"
    await client.query_orders("PO-1")
    again = env.calls("orders")[-1][0].query["messageId"]
    assert again and again != ids[0], "a new call is a new message"


async def test_5xx_retried_then_gives_up(env: Env) -> None:
    env.token("AT-1")
    env.mock.get(ORDERS, status=502, repeat=True, callback=env.rec("orders"))
    client = env.client(max_attempts=3, rng=lambda: 0.5)
    with pytest.raises(OCError) as info:
        await client.query_orders("PO-1")
    assert info.value.retryable
    assert len(env.calls("orders")) == 3
    assert env.sleeps == [0.25, 0.5]


async def test_fallback_answer_is_retried(env: Env) -> None:
    env.token("AT-1")
    env.mock.get(ORDERS, payload={**fail("SYS", "degraded"), "isFallback": True})
    env.mock.get(ORDERS, payload=ok({"list": [{"orderNumber": "OCS1", "trackingNumber": "T"}]}))
    rmas = await env.client().query_orders("PO-1")
    assert [r.tracking_number for r in rmas] == ["T"]


async def test_client_error_is_not_retried(env: Env) -> None:
    env.token("AT-1")
    env.mock.get(ORDERS, status=400, payload=fail("E400", "bad referenceNumber"), repeat=True)
    with pytest.raises(OCError) as info:
        await env.client().query_orders("PO-1")
    assert info.value.status == 400
    assert not isinstance(info.value, OCAuthError | OCBusinessError)
    assert env.sleeps == []


async def test_business_error_raises(env: Env) -> None:
    env.token("AT-1")
    env.mock.post(CANCEL, payload=fail("RMA_CLOSED", "RMA already closed"))
    with pytest.raises(OCBusinessError) as info:
        await env.client().cancel_rma("OCS1", message_id="m")
    assert info.value.code == "RMA_CLOSED"
    assert "RMA already closed" in str(info.value)


@pytest.mark.parametrize(
    "answer",
    [
        fail("LABEL_NOT_READY", "label is being generated"),
        ok({**LABEL_RESULT, "docUrl": ""}),
        ok(None),
    ],
)
async def test_label_not_ready_is_none(env: Env, answer: dict[str, Any]) -> None:
    env.token("AT-1")
    env.mock.get(LABEL, payload=answer)
    assert await env.client().query_label("OCS1") is None


async def test_stored_token_rejected_falls_back_to_configured_seed(env: Env) -> None:
    env.store = MemoryTokenStore({"cid": StoredTokens("RT-OLD", "AT-OLD", 0.0)})
    env.mock.post(OAUTH, status=400, payload={"error": "invalid_grant"}, callback=env.rec("oauth"))
    env.token("AT-1", "RT-2")
    env.mock.get(ORDERS, payload=ok([]))
    await env.client().query_orders("PO-1")
    used = [u.query["refresh_token"] for u, _ in env.calls("oauth")]
    assert used == ["RT-OLD", SEED]
    stored = await env.store.get("cid")
    assert stored is not None and stored.refresh_token == "RT-2"


async def test_failed_save_blocks_use_until_saved(env: Env) -> None:
    class FlakyStore(MemoryTokenStore):
        fail_next = True

        async def save(self, *args: Any) -> None:
            if self.fail_next:
                self.fail_next = False
                raise ConnectionError("db down")
            await super().save(*args)

    env.store = FlakyStore()
    env.token("AT-1", "RT-2")
    env.mock.get(ORDERS, payload=ok([]), callback=env.rec("orders"))
    client = env.client()
    with pytest.raises(OCError) as info:
        await client.query_orders("PO-1")
    assert "RT-2" not in str(info.value) and "AT-1" not in str(info.value)
    assert env.calls("orders") == []

    await client.query_orders("PO-1")
    assert len(env.calls("oauth")) == 1  # the rotated token was kept, not refreshed again
    assert await env.store.get("cid") == StoredTokens("RT-2", "AT-1", env.clock.now + 3600)


async def test_secrets_never_in_errors_or_logs(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [SEED, CLIENT_KEY, "AT-1", "RT-2"]

    # A rejected refresh whose answer echoes the token.
    env.mock.post(
        OAUTH,
        status=401,
        payload={"error": "invalid_grant", "error_description": f"refresh token {SEED} revoked"},
    )
    with pytest.raises(OCAuthError) as auth:
        await env.client().query_orders("PO-1")
    assert "invalid_grant" in str(auth.value)

    # Connection failures on the OAuth URL (which carries the refresh token) until give-up.
    env.mock.post(OAUTH, exception=aiohttp.ClientConnectionError(f"refused {OAUTH}?{SEED}"))
    env.mock.post(OAUTH, exception=aiohttp.ClientConnectionError(f"refused ?{SEED}"))
    with pytest.raises(OCError) as transport:
        await env.client(max_attempts=2).query_orders("PO-1")

    # A business error echoing the access token and client key.
    env.token("AT-1", "RT-2")
    env.mock.get(ORDERS, payload=fail("E1", f"bad header AT-1 / {CLIENT_KEY}"))
    with pytest.raises(OCBusinessError) as business:
        await env.client().query_orders("PO-1")

    texts = [str(auth.value), str(transport.value), str(business.value), caplog.text]
    texts += [repr(auth.value), repr(await env.store.get("cid"))]
    for text in texts:
        for secret in secrets:
            assert secret not in text, (secret, text)
    assert "***" in str(business.value)


async def test_pacing_spaces_requests(env: Env) -> None:
    env.token("AT-1")
    env.mock.get(ORDERS, payload=ok([]), repeat=True)
    client = env.client(settings=settings(qps=50.0))
    await client.query_orders("warm-up")
    start = time.monotonic()
    for i in range(5):
        await client.query_orders(str(i))
    # 1 request per 20 ms and no burst allowance.
    assert time.monotonic() - start >= 0.08
