"""The reconciler's LISTEN connection outlives a lost connection: after its backend is killed
(a Postgres restart, a failover, an idle-connection reaper), a label queued later still wakes
the loop within seconds instead of waiting for the timer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from engine.app.reconciler import build_reconciler, label_submitter
from engine.app.runtime import Runtime, open_runtime
from engine.daemon.reconciler_loop import reconciler_loop
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from tests.fixtures_sim import SimFactory
from tests.integration.test_reconcile_flow import QPS, awaiting, load_from_temu, make_settings
from tests.integration.test_reconcile_labels import ecart

LISTENERS = (
    "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'LISTEN %' AND pid <> pg_backend_pid()"
)


@pytest.fixture
async def world(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> AsyncIterator[tuple[Simulator, Runtime]]:
    config = SimConfig.default(orders=100, returns=60, shops=1, qps=QPS, seed=7)
    sim = await sim_factory(config)
    settings = make_settings(sim, config, pg_url, schema, oc_enabled=False)
    # The timer alone would not fire during the test.
    settings = replace(settings, reconciler=replace(settings.reconciler, interval_s=120.0))
    rt = await open_runtime(settings)
    try:
        await load_from_temu(rt)
        yield sim, rt
    finally:
        await rt.close()


async def _until(check: Any, what: str, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_killed_listen_connection_is_reopened_and_wakes_the_loop(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    stop = asyncio.Event()
    loop = asyncio.create_task(reconciler_loop(rt, stop, reconciler=build_reconciler(rt)))
    try:

        async def listening() -> bool:
            return bool(await rt.pool.fetch(LISTENERS))

        await _until(listening, "the loop never listened")
        killed = await rt.pool.fetch(f"SELECT pg_terminate_backend(pid) FROM ({LISTENERS}) l")
        assert len(killed) == 1
        await asyncio.sleep(0.2)
        # Reopened (with backoff of a second or so), on a new backend.
        await _until(listening, "the LISTEN connection was not reopened")

        sn = awaiting(sim)[0]["parentAfterSalesSn"]
        await label_submitter(rt).submit(sn, {"returnFulfillment": ecart(sn)["returnFulfillment"]})

        async def uploaded() -> bool:
            return bool(sim.uploads())

        await _until(uploaded, "the NOTIFY did not wake the loop (the timer is 120 s away)")
        assert [u["parentAfterSalesSn"] for u in sim.uploads()] == [sn]
    finally:
        stop.set()
        await asyncio.wait_for(loop, timeout=10)
