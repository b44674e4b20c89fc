"""The daemon's database probe keeps its own deadline against a silent Postgres (a frozen
host answers nothing, not even the cancel of the probe's query): /healthz reports the database
down within the probe timeout, not after asyncpg's minute, and up again once it answers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from engine.app.runtime import open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.daemon.health import HealthBoard
from engine.daemon.metrics import Metrics
from engine.daemon.monitor import Monitor
from engine.daemon.notify import Notifier
from engine.daemon.options import DaemonOptions
from engine.sim.config import SimConfig
from tests.fixtures_sim import SimFactory
from tests.silent_pg import SilentPostgres


async def test_a_silent_database_shows_down_within_the_probe_timeout(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    config = SimConfig.default(orders=10, returns=0, shops=1)
    sim = await sim_factory(config)
    async with SilentPostgres(pg_url).running() as silent:
        settings = settings_for_simulator(sim, config, database_url=silent.url, schema=schema)
        settings = replace(settings, database=replace(settings.database, statement_timeout_s=60.0))
        rt = await open_runtime(settings)
        try:
            board = HealthBoard()
            board.register(Monitor.NAME, 5.0, kind="monitor")
            monitor = Monitor(
                rt,
                board=board,
                metrics=Metrics(),
                notifier=Notifier(None),
                options=DaemonOptions(probe_timeout_s=0.5),
                interval_s=5.0,
            )
            await monitor.round()
            assert board.database_up
            silent.freeze()
            started = time.monotonic()
            await monitor.round()
            assert not board.database_up
            assert time.monotonic() - started < 1.5
            # The next round does not pile a second stuck probe onto the pool.
            started = time.monotonic()
            await monitor.round()
            assert not board.database_up and time.monotonic() - started < 0.2
            silent.thaw()
            for _ in range(100):
                await monitor.round()
                if board.database_up:
                    break
                await asyncio.sleep(0.1)
            assert board.database_up
        finally:
            silent.thaw()
            await rt.close()
