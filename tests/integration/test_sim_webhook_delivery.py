"""The simulator's delivery modes over real HTTP: a lost acknowledgement (the receiver's 200
arrived too late for Temu) makes Temu re-send the SAME message on its retry schedule."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from engine.sim.webhooks import RETRY_DELAYS_S

SimFactory = Callable[[SimConfig], Awaitable[Simulator]]


async def test_lost_acks_are_retried_with_the_same_message(sim_factory: SimFactory) -> None:
    sim = await sim_factory(SimConfig.default(orders=20, returns=5, shops=1))
    seen: list[tuple[dict[str, str], bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        headers = {k: v for k, v in headers.items() if k.startswith("x-tm-")}
        seen.append((headers, await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        sim.webhooks.configure(
            f"http://{host}:{port}/hook",
            retry_scale=0.00002,  # Temu's 27.7 hours of retries in 2 s
            lost_ack_rate=1.0,
            require_subscription=False,
        )
        sim.mutate("shop-1", orders_changed=1)
        await sim.webhooks.drain(timeout_s=20)
    finally:
        await runner.cleanup()
    counts = sim.webhooks.counts
    # Every 200 but the last is "lost": Temu tries its whole schedule, then takes the answer.
    assert counts["events"] == 1
    assert len(seen) == 1 + len(RETRY_DELAYS_S) == counts["posts"]
    assert counts["lost_acks"] == counts["retries"] == len(RETRY_DELAYS_S)
    assert counts["delivered"] == 1 and counts["dropped"] == 0
    assert {"x-tm-timestamp", "x-tm-signature", "x-tm-app-key"} <= set(seen[0][0])
    assert all(message == seen[0] for message in seen[1:]), "same headers and body each time"
