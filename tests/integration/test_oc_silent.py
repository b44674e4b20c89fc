"""An Orange Connex (and its OAuth host) that accepts connections and never answers: each OC
operation fails within its budget (two request timeouts), the tasks waiting on the same dead
token refresh get its error at once instead of each waiting it out again, and the label a
merchant submitted is uploaded to Temu in the same pass, booked as progress while OC hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiohttp import web

from engine.app.reconciler import build_reconciler, label_submitter
from engine.app.runtime import open_runtime
from engine.sim.config import SimConfig
from tests.fixtures_sim import SimFactory
from tests.integration.test_reconcile_flow import QPS, awaiting, load_from_temu, make_settings
from tests.integration.test_reconcile_labels import ecart


@pytest.fixture
async def silent_oc() -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []

    async def hang(request: web.Request) -> web.Response:
        hits.append(request.path)
        await asyncio.sleep(3600)
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", hits
    finally:
        await runner.cleanup()


async def test_a_silent_oc_fails_its_tasks_on_time_and_holds_no_label_upload(
    sim_factory: SimFactory, pg_url: str, schema: str, silent_oc: tuple[str, list[str]]
) -> None:
    url, hits = silent_oc
    config = SimConfig.default(orders=300, returns=80, shops=1, qps=QPS, seed=7)
    sim = await sim_factory(config)
    settings = make_settings(sim, config, pg_url, schema)
    oc = replace(
        settings.orange_connex, base_url=url + "/openapi", oauth_base_url=url, timeout_s=0.5
    )
    rt = await open_runtime(replace(settings, orange_connex=oc))
    try:
        await load_from_temu(rt)
        sn = awaiting(sim)[0]["parentAfterSalesSn"]
        await label_submitter(rt).submit(sn, {"returnFulfillment": ecart(sn)["returnFulfillment"]})
        progress: list[float] = []
        started = time.monotonic()
        stats = await build_reconciler(rt).run_pass(lambda: progress.append(time.monotonic()))
        took = time.monotonic() - started

        assert [u["parentAfterSalesSn"] for u in sim.uploads()] == [sn]
        rows = await rt.pool.fetch(
            "SELECT kind, state, last_error FROM outbox WHERE kind <> 'upload_label'"
            " OR dedupe_key LIKE $1",
            f"%:{sn}",
        )
        oc_tasks = [r for r in rows if r["kind"] != "upload_label"]
        assert oc_tasks, "the seed must give OC work"
        # Every OC task was booked with OC's silence as its error, none left running.
        assert {r["state"] for r in oc_tasks} == {"pending"}, stats
        assert all("no answer" in (r["last_error"] or "") for r in oc_tasks), oc_tasks[:3]
        # One refresh waited out the silence (two tries); the others were told at once.
        assert hits.count("/oauth/token") <= 2, hits
        assert took < 10, took
        assert len(progress) >= len(oc_tasks)
    finally:
        await rt.close()


async def test_a_call_cancelled_from_outside_does_not_stop_the_next_refresh(
    silent_oc: tuple[str, list[str]],
) -> None:
    """Only OC's own silence (the operation's budget running out in the refresh) makes the
    next callers fail fast: a pass cancelled by shutdown or its deadline says nothing of OC."""
    import aiohttp

    from engine.config import OrangeConnexSettings, Secret
    from engine.oc import MemoryTokenStore, OCClient, OCError

    url, hits = silent_oc
    settings = OrangeConnexSettings(
        enabled=True,
        base_url=url + "/openapi",
        oauth_base_url=url,
        client_id="cid",
        refresh_token=Secret("RT-0"),
        qps=100.0,
        timeout_s=0.5,
    )
    async with aiohttp.ClientSession() as session:
        client = OCClient(session, settings, MemoryTokenStore())
        call = asyncio.ensure_future(client.query_orders("PO-1"))
        await asyncio.sleep(0.2)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        cancelled = hits.count("/oauth/token")
        with pytest.raises(OCError, match="no answer within"):
            await client.query_orders("PO-1")  # refreshes again, waits out its own budget
        tried = hits.count("/oauth/token")
        assert tried > cancelled
        with pytest.raises(OCError, match="failed 0 s ago"):
            await client.query_orders("PO-1")  # now told at once
        assert hits.count("/oauth/token") == tried
