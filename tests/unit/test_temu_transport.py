"""TemuTransport against canned HTTP answers: what is sent, what is retried, what surfaces."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aioresponses import aioresponses
from yarl import URL

from engine.config import AppSettings, Secret
from engine.temu.errors import (
    AftersalesStateError,
    ApiFailure,
    AppAuthError,
    BadParams,
    BadSignature,
    RateLimited,
    ShopAuthError,
    SystemBusy,
    TemuError,
    TimestampRejected,
    TransportError,
    UnexpectedHttpStatus,
    UnknownApiError,
)
from engine.temu.limiter import AppPacer, Lane
from engine.temu.signing import sign
from engine.temu.stats import CallStats
from engine.temu.transport import TemuTransport

ROUTER = "http://temu.test/openapi/router"
SECRET = "app-secret-0123456789abcdef"
TOKEN = "shop-token-zyxwvutsrq987654"
APP = AppSettings(
    app_key="ak-test", app_secret=Secret(SECRET), base_url=ROUTER, max_attempts=5, timeout_s=5
)
API = "bg.order.list.v2.get"


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 omits the ``stream_writer`` that aiohttp 3.14 requires (upstream
    pnuckowski/aioresponses#289); a stand-in keeps these narrow client tests runnable."""

    def __init__(self, method: str, url: URL, **kw: Any) -> None:
        kw.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kw)


def post(mock: aioresponses, **kw: Any) -> None:
    mock.post(ROUTER, response_class=_Response, **kw)


def ok(result: Any = None) -> dict[str, Any]:
    return {
        "success": True,
        "errorCode": 1000000,
        "errorMsg": "",
        "requestId": "r-ok",
        "result": result,
    }


def fail(code: int, msg: str = "nope") -> dict[str, Any]:
    return {
        "success": False,
        "errorCode": code,
        "errorMsg": msg,
        "requestId": f"r-{code}",
        "result": None,
    }


class Harness:
    def __init__(self, session: aiohttp.ClientSession, mock: aioresponses) -> None:
        self.mock = mock
        self.now = 1_700_000_000.0
        self.sleeps: list[float] = []
        self.stats = CallStats()
        self.observed: list[tuple[str, str, str]] = []
        self.stats.observer = lambda *a: self.observed.append(a)
        self.pacer = AppPacer(1000)
        self.transport = TemuTransport(
            session,
            APP,
            self.pacer,
            self.stats,
            clock=self._clock,
            sleep=self._sleep,
            rng=lambda: 1.0,
        )

    def _clock(self) -> float:
        # Every try reads the clock once; a step of 1 s makes each try's timestamp distinct.
        self.now += 1
        return self.now

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def answer(self, *bodies: dict[str, Any] | bytes | int | BaseException) -> None:
        for body in bodies:
            if isinstance(body, BaseException):
                post(self.mock, exception=body)
            elif isinstance(body, int):
                post(self.mock, status=body, body=b"<html>bad gateway</html>")
            elif isinstance(body, bytes):
                post(self.mock, status=200, body=body)
            else:
                post(self.mock, status=200, payload=body)

    def sent(self) -> list[dict[str, Any]]:
        calls = self.mock.requests.get(("POST", URL(ROUTER)), [])
        return [orjson.loads(c.kwargs["data"]) for c in calls]

    def sent_headers(self) -> list[Any]:
        return [c.kwargs["headers"] for c in self.mock.requests[("POST", URL(ROUTER))]]

    async def call(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.transport.call(
            API, TOKEN, params or {"pageNumber": 1}, lane=Lane.INCREMENTAL
        )


@pytest.fixture
def mock() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


@pytest.fixture
async def h(mock: aioresponses) -> AsyncIterator[Harness]:
    async with aiohttp.ClientSession() as session:
        yield Harness(session, mock)


async def test_success_sends_one_flat_signed_json_body(h: Harness) -> None:
    h.answer(ok({"totalItemNum": 0, "pageItems": []}))
    params = {"pageNumber": 2, "pageSize": 50, "nested": {"b": 1, "a": [1, "ü"]}}
    result = await h.call(params)
    assert result == {"totalItemNum": 0, "pageItems": []}
    [body] = h.sent()
    assert body["type"] == API
    assert body["app_key"] == "ak-test"
    assert body["access_token"] == TOKEN
    assert body["data_type"] == "JSON"
    assert body["timestamp"] == 1_700_000_001
    assert "request" not in body
    assert body["pageNumber"] == 2 and body["nested"] == {"b": 1, "a": [1, "ü"]}
    assert body["sign"] == sign({k: v for k, v in body.items() if k != "sign"}, SECRET)
    assert h.sent_headers()[0]["Content-Type"] == "application/json"
    assert (h.stats.requests, h.stats.retries, h.stats.rate_limited) == (1, 0, 0)
    assert h.observed == [("ak-test", API, "ok")]
    # The answer was reported back, so the pacer can bound when the send arrived.
    assert h.pacer.rtt_min is not None


async def test_null_result_is_empty_dict(h: Harness) -> None:
    h.answer(ok(None))
    assert await h.call() == {}


RETRIED = {
    "http 500": 500,
    "http 502": 502,
    "connection reset": aiohttp.ServerDisconnectedError(),
    "connection refused": aiohttp.ClientConnectionError("refused"),
    "timeout": TimeoutError(),
    "invalid json": b"{not json",
    "envelope missing": {"hello": "world"},
    "4000000 system busy": fail(4000000),
    "4000004 rate limited": fail(4000004),
    "2000000 api failure": fail(2000000),
    "7000000 api failure": fail(7000000),
}


@pytest.mark.parametrize("first", RETRIED.values(), ids=list(RETRIED))
async def test_retryable_failure_is_retried_and_re_signed(h: Harness, first: Any) -> None:
    h.answer(first, ok({"x": 1}))
    assert await h.call() == {"x": 1}
    a, b = h.sent()
    assert a["timestamp"] != b["timestamp"]
    assert a["sign"] != b["sign"]
    for body in (a, b):
        assert body["sign"] == sign({k: v for k, v in body.items() if k != "sign"}, SECRET)
    assert (h.stats.requests, h.stats.retries) == (2, 1)
    assert len(h.sleeps) == 1


SURFACED: dict[str, tuple[int, type[TemuError]]] = {
    "bad params": (3000000, BadParams),
    "bad signature": (3000001, BadSignature),
    "app unknown": (3000021, AppAuthError),
    "token expired": (3000034, ShopAuthError),
    "ip not whitelisted": (5000003, ShopAuthError),
    "label invalid": (130010006, AftersalesStateError),
    "unknown code": (123456, UnknownApiError),
}


@pytest.mark.parametrize(("code", "cls"), SURFACED.values(), ids=list(SURFACED))
async def test_unfixable_failure_surfaces_at_once(
    h: Harness, code: int, cls: type[TemuError]
) -> None:
    h.answer(fail(code, "explained"), ok())
    with pytest.raises(cls) as info:
        await h.call()
    assert info.value.code == code
    assert info.value.request_id == f"r-{code}"
    assert h.stats.requests == 1 and h.sleeps == []
    assert h.observed == [("ak-test", API, f"error:{cls.__name__}")]


async def test_forbidden_html_is_not_retried(h: Harness) -> None:
    h.answer(403, ok())
    with pytest.raises(UnexpectedHttpStatus):
        await h.call()
    assert h.stats.requests == 1


async def test_timestamp_rejection_re_signs_once_then_surfaces(h: Harness) -> None:
    h.answer(fail(3000012), fail(3000012), ok())
    with pytest.raises(TimestampRejected) as info:
        await h.call()
    a, b = h.sent()
    assert a["timestamp"] != b["timestamp"] and a["sign"] != b["sign"]
    assert info.value.local_timestamp == b["timestamp"]
    assert h.stats.requests == 2


async def test_timestamp_rejection_recovers_with_a_fresh_timestamp(h: Harness) -> None:
    h.answer(fail(3000011), ok({"y": 2}))
    assert await h.call() == {"y": 2}
    assert h.sleeps == [0.0] or h.sleeps == []


async def test_attempts_are_bounded_with_exponential_full_jitter(h: Harness) -> None:
    h.answer(*[503] * 6)
    with pytest.raises(TransportError) as info:
        await h.call()
    assert info.value.code == 503
    assert h.stats.requests == APP.max_attempts == 5
    # rng() == 1.0 shows each jitter ceiling: base 0.5 s doubling per attempt.
    assert h.sleeps == [0.5, 1.0, 2.0, 4.0]


async def test_full_jitter_draws_below_the_ceiling(mock: aioresponses) -> None:
    draws = iter([0.25, 0.5])
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    async with aiohttp.ClientSession() as session:
        t = TemuTransport(
            session, APP, AppPacer(1000), CallStats(), sleep=sleep, rng=lambda: next(draws)
        )
        post(mock, status=500)
        post(mock, status=500)
        post(mock, payload=ok())
        await t.call(API, TOKEN, {}, lane=Lane.BACKFILL)
    assert sleeps == [0.25 * 0.5, 0.5 * 1.0]


async def test_api_failure_gives_up_after_three_tries(h: Harness) -> None:
    h.answer(*[fail(2000000)] * 5)
    with pytest.raises(ApiFailure):
        await h.call()
    assert h.stats.requests == 3


async def test_system_busy_retries_up_to_the_limit(h: Harness) -> None:
    h.answer(*[fail(4000000)] * 5)
    with pytest.raises(SystemBusy):
        await h.call()
    assert h.stats.requests == 5


async def test_rate_limit_slows_the_pacer_and_backs_off_briefly(h: Harness) -> None:
    before = h.pacer.pace
    h.answer(fail(4000004), fail(4000004), ok())
    await h.call()
    assert h.pacer.pace < before
    assert h.stats.rate_limited == 2
    # Brief at first (the pacer is the throttle), doubling so a storm is outlasted.
    assert h.sleeps[0] <= 0.1 and h.sleeps[1] <= 0.2
    outcomes = [o for _, _, o in h.observed]
    assert outcomes == ["rate_limited", "rate_limited", "ok"]


async def test_rate_limit_storm_backoff_grows(h: Harness) -> None:
    h.answer(*[fail(4000004)] * 5, ok())
    await h.call()
    assert len(h.sleeps) == 5
    caps = [0.1 * 2**i for i in range(len(h.sleeps))]
    assert all(s <= c for s, c in zip(h.sleeps, caps, strict=True))
    assert sum(caps) >= 1.5, "four retries span a storm of over a second"


async def test_rate_limit_is_retried_three_times_max_attempts_then_surfaces(h: Harness) -> None:
    # temu-api.md: 4000004 is "slow down, retry"; a storm longer than max_attempts' worth of
    # backoff is outlasted (here max_attempts 5: 15 answers in a row), then it surfaces.
    h.answer(*[fail(4000004)] * 14, ok())
    await h.call()
    assert h.stats.rate_limited == 14
    h.answer(*[fail(4000004)] * 15)
    with pytest.raises(RateLimited):
        await h.call()
    assert h.stats.rate_limited == 14 + 15


async def test_secrets_never_reach_error_text_or_logs(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    echo = f"bad sign; you sent access_token={TOKEN} and we expected secret {SECRET}"
    post(h.mock, status=500, body=f"upstream said {TOKEN} {SECRET}".encode())
    h.answer(fail(3000001, echo))
    with caplog.at_level(logging.DEBUG), pytest.raises(BadSignature) as info:
        await h.call()
    err = info.value
    texts = [str(err), repr(err), err.message, *map(str, err.args)]
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert SECRET not in text
        assert TOKEN not in text
    assert "***" in str(err)
    records = [r for r in caplog.records if r.name == "engine.temu.transport"]
    assert records and all(getattr(r, "app_key", None) == "ak-test" for r in records)
    assert all(getattr(r, "api_type", None) == API for r in records)


async def test_params_may_not_override_common_parameters(h: Harness) -> None:
    with pytest.raises(ValueError, match="access_token"):
        await h.call({"access_token": "other"})
    assert h.stats.requests == 0


async def test_success_false_result_is_never_returned(h: Harness) -> None:
    h.answer({"success": False, "errorMsg": "no code", "requestId": "r"})
    with pytest.raises(UnknownApiError):
        await h.call()


@pytest.mark.parametrize("lost", [502, fail(4000000), TimeoutError()])
async def test_a_write_whose_answer_is_lost_is_not_resent(h: Harness, lost: Any) -> None:
    """A label upload that may have been applied must not be applied twice: surface instead."""
    h.answer(lost, ok())
    with pytest.raises(TemuError):
        await h.transport.call(API, TOKEN, {"x": 1}, lane=Lane.RECONCILER, idempotent=False)
    assert h.stats.requests == 1


async def test_a_write_refused_by_the_rate_limit_is_resent(h: Harness) -> None:
    """4000004 proves the gateway applied nothing, so even a write goes again."""
    h.answer(fail(4000004), ok({"done": True}))
    result = await h.transport.call(API, TOKEN, {"x": 1}, lane=Lane.RECONCILER, idempotent=False)
    assert result == {"done": True}
    assert h.stats.requests == 2


def ok_but(code: Any) -> dict[str, Any]:
    """``success: true`` beside another errorCode, as a gateway was seen to answer."""
    return {**ok(None), "errorCode": code, "errorMsg": "RATE_LIMIT_EXCEED_EXCEPTION"}


@pytest.mark.parametrize("code", [4000004, "4000004"], ids=["number", "quoted"])
async def test_success_flag_beside_an_error_code_is_that_error(h: Harness, code: Any) -> None:
    """temu-api.md: errors are in errorCode. Read as success, 4000004 neither slowed the
    pacer nor was retried: the page came back empty of its list."""
    before = h.pacer.pace
    h.answer(ok_but(code), ok({"x": 1}))
    assert await h.call() == {"x": 1}
    assert h.pacer.pace < before
    assert h.stats.rate_limited == 1 and len(h.sent()) == 2
    assert [o for _, _, o in h.observed] == ["rate_limited", "ok"]


async def test_success_flag_beside_an_unreadable_code_stays_success(h: Harness) -> None:
    h.answer({**ok({"x": 1}), "errorCode": None})
    assert await h.call() == {"x": 1}
