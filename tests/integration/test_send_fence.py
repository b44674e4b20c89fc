"""The lease fence: a send granted while this process owned the app, but written after it
lost the lease (the process was paused in between), never reaches Temu."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from engine.config import AppSettings, Secret
from engine.temu.errors import AppNotOwned
from engine.temu.limiter import AppPacer, Lane
from engine.temu.stats import CallStats
from engine.temu.transport import TemuTransport, send_fence


@pytest.fixture
async def router() -> AsyncIterator[tuple[str, list[bytes]]]:
    seen: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response({"success": True, "errorCode": 1000000, "result": {"ok": 1}})

    app = web.Application()
    app.router.add_post("/openapi/router", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/openapi/router", seen
    finally:
        await runner.cleanup()


async def test_a_send_fenced_after_its_grant_never_leaves(
    router: tuple[str, list[bytes]],
) -> None:
    url, seen = router
    app = AppSettings(app_key="ak", app_secret=Secret("s"), base_url=url)
    checks: list[bool] = []
    owned = [True, True]  # (at the grant, just before the write)

    def gate() -> None:
        allowed = owned[min(len(checks), 1)]
        checks.append(allowed)
        if not allowed:
            raise AppNotOwned("(lease)", 0, "app ak is not leased to this process")

    pacer = AppPacer(20, gate=gate)
    stats = CallStats()
    async with aiohttp.ClientSession(trace_configs=[send_fence()]) as session:
        transport = TemuTransport(session, app, pacer, stats)
        assert await transport.call("bg.x", "tok", {}, lane=Lane.INCREMENTAL) == {"ok": 1}
        assert len(seen) == 1 and checks == [True, True]

        # The lease is lost between the grant and the write (as after SIGSTOP / SIGCONT).
        checks.clear()
        owned[:] = [True, False]
        with pytest.raises(AppNotOwned):
            await transport.call("bg.x", "tok", {}, lane=Lane.INCREMENTAL)
        assert checks == [True, False]
        assert len(seen) == 1, "the fenced request reached the server"
    assert stats.requests == 1  # only what Temu saw is counted
    assert orjson.loads(seen[0])["type"] == "bg.x"
