"""The reconciler loop reports every pass to the health board: passes that fail make /healthz
name the reconciler; a pass that hangs is cancelled at its deadline and reported too; the
check turns ok again by itself once passes succeed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from engine.app.runtime import open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.daemon.health import HealthBoard
from engine.daemon.reconciler_loop import NAME, reconciler_loop
from engine.reconcile.reconciler import Reconciler
from engine.sim.config import SimConfig
from engine.sim.server import Simulator

SimFactory = Callable[[SimConfig], Awaitable[Simulator]]


class ScriptedReconciler(Reconciler):
    """A reconciler whose pass does what the test says: fail, hang, or succeed."""

    def __init__(self) -> None:
        self.mode = "fail"
        self.passes = 0

    async def run_pass(self, progress: Callable[[], None] | None = None) -> Any:
        self.passes += 1
        if self.mode == "fail":
            raise asyncpg.exceptions.LockNotAvailableError(
                "canceling statement due to lock timeout"
            )
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return None


async def _until(check: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling a board the loop writes to
            await asyncio.sleep(0.02)


async def test_failing_and_hung_passes_show_in_health_by_name(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    config = SimConfig.default(orders=5, returns=0, shops=1)
    sim = await sim_factory(config)
    settings = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, reconciler={"interval_s": 0.05}
    )
    rt = await open_runtime(settings)
    board = HealthBoard(slack_s=0.5, failing_grace_s=0.3)
    board.register(NAME, 0.05, kind="reconciler")
    scripted = ScriptedReconciler()
    stop = asyncio.Event()
    loop = asyncio.create_task(reconciler_loop(rt, stop, reconciler=scripted, board=board))
    try:
        await _until(lambda: not board.health()[0])
        details = board.health()[1]
        assert "reconciler" in details["reason"] and "lock timeout" in details["reason"]
        assert details["loops"][NAME]["failures"] >= 2

        scripted.mode = "ok"
        await _until(lambda: board.health()[0])

        scripted.mode = "hang"
        await _until(lambda: board.loop(NAME).failures > 0, within=15)
        assert "no progress" in (board.loop(NAME).last_error or "")
        scripted.mode = "ok"
        await _until(lambda: board.health()[0])
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await loop
        await rt.close()
