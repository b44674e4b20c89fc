from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest

from engine.app.runtime import Observers, open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.config import Secret
from engine.daemon.http import build_app, parse_listen, start_http, stop_http
from engine.daemon.metrics import Metrics
from engine.reconcile.ports import LabelRejected, SubmitResult
from engine.sim.config import SimConfig
from tests.fixtures_sim import SimFactory

TOKEN = "admin-token-5c1b0e"
MAX_BODY = 2048
LABEL = {"returnFulfillment": {"tracking": {"number": "1Z999", "companyId": 12}}}


@dataclass
class FakeHealth:
    ok: bool = True
    details: dict[str, Any] = field(default_factory=lambda: {"loops": {"sync:us-main": 3.2}})

    def health(self) -> tuple[bool, dict[str, Any]]:
        return self.ok, self.details


@dataclass
class FakeSubmitter:
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    reject: LabelRejected | None = None

    async def submit(self, parent_after_sales_sn: str, body: dict[str, Any]) -> SubmitResult:
        self.calls.append((parent_after_sales_sn, body))
        if self.reject:
            raise self.reject
        return SubmitResult(dedupe_key=f"label:{parent_after_sales_sn}")


@dataclass
class Server:
    url: str
    health: FakeHealth
    submitter: FakeSubmitter
    metrics: Metrics
    session: aiohttp.ClientSession


Start = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    runners = []
    sessions = []

    async def _start(
        admin_token: str = TOKEN, with_submitter: bool = True, metrics: Metrics | None = None
    ) -> Server:
        health, submitter = FakeHealth(), FakeSubmitter()
        metrics = Metrics() if metrics is None else metrics
        app = build_app(
            metrics=metrics,
            health=health,
            admin_token=Secret(admin_token),
            label_submitter=submitter if with_submitter else None,
            max_body_bytes=MAX_BODY,
        )
        runner = await start_http(app, "127.0.0.1:0")
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Server(f"http://{host}:{port}", health, submitter, metrics, session)

    yield _start
    for s in sessions:
        await s.close()
    for r in runners:
        await stop_http(r)


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_healthz_ok_and_unhealthy(start: Start) -> None:
    srv = await start()
    async with srv.session.get(f"{srv.url}/healthz") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ok", "loops": {"sync:us-main": 3.2}}

    srv.health.ok = False
    srv.health.details = {"reason": "loop sync:us-main made no progress for 900s"}
    async with srv.session.get(f"{srv.url}/healthz") as r:
        assert r.status == 503
        body = await r.json()
        assert body["status"] == "unhealthy"
        assert body["reason"] == "loop sync:us-main made no progress for 900s"


async def test_livez_stays_200_while_healthz_is_503(start: Start) -> None:
    srv = await start()
    srv.health.ok = False
    srv.health.details = {"reason": "database unavailable"}
    async with srv.session.get(f"{srv.url}/healthz") as r:
        assert r.status == 503
    async with srv.session.get(f"{srv.url}/livez") as r:
        assert r.status == 200
        assert (await r.json())["status"] == "alive"


async def test_healthz_when_health_source_raises(start: Start) -> None:
    srv = await start()

    def boom() -> tuple[bool, dict[str, Any]]:
        raise RuntimeError("db gone")

    srv.health.health = boom  # type: ignore[method-assign]
    async with srv.session.get(f"{srv.url}/healthz") as r:
        assert r.status == 503
        assert (await r.json())["reason"] == "health check failed: RuntimeError"


async def test_metrics_text(start: Start) -> None:
    srv = await start()
    srv.metrics.observe_request("k1", "bg.order.list.v2.get", "ok")
    srv.metrics.set_cursor_lag("us-main", "returns", 12)
    async with srv.session.get(f"{srv.url}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    assert (
        'temu_sync_requests_total{api_type="bg.order.list.v2.get",app_key="k1",outcome="ok"} 1.0'
        in text
    )
    assert 'temu_sync_cursor_lag_seconds{shop="us-main",stream="returns"} 12.0' in text


async def test_metrics_count_each_rate_limit_hit_from_zero(
    start: Start, sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    """Temu allows 3 req/s, the engine is configured for 30: the 4000004 answers it gets
    while its pacer slows down are each counted, per app, in a series that read 0 before."""
    config = SimConfig.default(orders=300, returns=0, shops=2, qps=3, seed=4)
    sim = await sim_factory(config)
    settings = settings_for_simulator(sim, config, database_url=pg_url, schema=schema)
    settings = replace(settings, apps=tuple(replace(a, qps=30.0) for a in settings.apps))
    metrics = Metrics(app_keys=[a.app_key for a in settings.apps])
    srv = await start(metrics=metrics)
    hits = re.compile(r'^temu_sync_rate_limited_total\{app_key="sim-app-1"\} (\S+)$', re.M)

    async def scraped() -> float:
        async with srv.session.get(f"{srv.url}/metrics") as r:
            found = hits.search(await r.text())
        assert found is not None, "no rate-limit series for sim-app-1"
        return float(found.group(1))

    assert await scraped() == 0.0
    rt = await open_runtime(settings, observers=Observers(request=metrics.observe_request))
    try:
        await rt.sync_service().backfill(settings.sync.start, None)
    finally:
        await rt.close()
    app = sim.stats(arrivals=False)["apps"]["sim-app-1"]
    refused = app["rejected_rate_limit"] + app["rejected_storm"]
    assert refused > 0, app
    assert await scraped() == refused


@pytest.mark.parametrize(
    "headers",
    [{}, _auth("wrong"), {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["missing", "wrong", "no-scheme", "basic"],
)
async def test_post_without_valid_token_is_401(start: Start, headers: dict[str, str]) -> None:
    srv = await start()
    url = f"{srv.url}/returns/PAS-1/fulfillment"
    async with srv.session.post(url, json=LABEL, headers=headers) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
        text = await r.text()
    assert TOKEN not in text
    assert srv.submitter.calls == []


async def test_post_when_admin_disabled_is_403(start: Start) -> None:
    srv = await start(admin_token="")
    url = f"{srv.url}/returns/PAS-1/fulfillment"
    for headers in ({}, _auth(""), _auth(TOKEN)):
        async with srv.session.post(url, json=LABEL, headers=headers) as r:
            assert r.status == 403
            assert "disabled" in (await r.json())["error"]
    assert srv.submitter.calls == []


async def test_oversized_body_is_413(start: Start) -> None:
    srv = await start()
    url = f"{srv.url}/returns/PAS-1/fulfillment"
    big = {"pad": "x" * (MAX_BODY * 2)}
    async with srv.session.post(url, json=big, headers=_auth()) as r:
        assert r.status == 413
        assert "error" in await r.json()

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit must hold while reading, not only on the header.
        for _ in range(8):
            yield b" " * 1024

    async with srv.session.post(url, data=chunks(), headers=_auth()) as r:
        assert r.status == 413
    assert srv.submitter.calls == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"", "not valid JSON")],
)
async def test_malformed_body_is_400(start: Start, body: bytes, fragment: str) -> None:
    srv = await start()
    url = f"{srv.url}/returns/PAS-1/fulfillment"
    async with srv.session.post(url, data=body, headers=_auth()) as r:
        assert r.status == 400
        assert fragment in (await r.json())["error"]
    assert srv.submitter.calls == []


@pytest.mark.parametrize("status", [422, 404])
async def test_rejections_pass_through(start: Start, status: int) -> None:
    srv = await start()
    srv.submitter.reject = LabelRejected("trackingCompany 'Foo' is not a Temu carrier", status)
    url = f"{srv.url}/returns/PAS-1/fulfillment"
    async with srv.session.post(url, json=LABEL, headers=_auth()) as r:
        assert r.status == status
        assert await r.json() == {"error": "trackingCompany 'Foo' is not a Temu carrier"}


async def test_valid_label_is_queued_202(start: Start) -> None:
    srv = await start()
    url = f"{srv.url}/returns/PAS-77/fulfillment"
    async with srv.session.post(url, json=LABEL, headers=_auth()) as r:
        assert r.status == 202
        body = await r.json()
    assert body["status"] == "queued"
    assert body["dedupe_key"] == "label:PAS-77"
    assert srv.submitter.calls == [("PAS-77", LABEL)]


async def test_no_submitter_is_503(start: Start) -> None:
    srv = await start(with_submitter=False)
    url = f"{srv.url}/returns/PAS-1/fulfillment"
    async with srv.session.post(url, json=LABEL, headers=_auth()) as r:
        assert r.status == 503


async def test_unknown_route_and_wrong_method_are_json(start: Start) -> None:
    srv = await start()
    async with srv.session.get(f"{srv.url}/nope") as r:
        assert r.status == 404
        assert "error" in await r.json()
    async with srv.session.get(f"{srv.url}/returns/PAS-1/fulfillment") as r:
        assert r.status == 405
        assert "POST" in r.headers["Allow"]
        assert "error" in await r.json()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9187", ("127.0.0.1", 9187)),
        ("[::1]:80", ("::1", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9187", ":9187", "host:", "host:http"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(listen)
