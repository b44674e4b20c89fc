"""Health tells the truth when Postgres cannot be written: a psql session holds
``LOCK TABLE orders IN ACCESS EXCLUSIVE MODE`` (up to 45 s) under a running daemon while orders
change at Temu. /healthz turns 503 naming the sync loop and the lock within 40 s, /livez stays
200, the process is never restarted, and within 30 s of the release Postgres equals the
simulator again (the blocked writes failed on their lock deadline and were retried)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import asyncpg

from engine.sim import SimConfig
from engine.store.pool import quote_ident
from tests.e2e.daemon_harness import (
    db_differences,
    eventually,
    free_port,
    get_json,
    write_config,
)
from tests.fixtures_proc import EngineProcess
from tests.fixtures_sim import SimFactory

LOCK_S = 45.0
HOLD_503_S = 3.0


async def test_a_locked_orders_table_shows_in_healthz_and_heals(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    sim = await sim_factory(SimConfig.default(orders=120, returns=10, shops=1, seed=13))
    port = free_port()
    cfg = write_config(
        tmp_path / "config.toml",
        sim,
        db_url=pg_url,
        schema=schema,
        listen=f"127.0.0.1:{port}",
        poll_interval_s=10.0,  # stale only after 60 s: the failing streak must show first
    )
    daemon = await EngineProcess(tmp_path, "daemon", ["--config", str(cfg), "run"]).start()
    base = f"http://127.0.0.1:{port}"
    conn = await asyncpg.connect(pg_url)
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                status, _ = await get_json(http, f"{base}/healthz")
                return status == 200

            async def synced() -> bool:
                return not await db_differences(conn, schema, sim)

            await eventually(synced, within=60, what="the first sync")
            await eventually(healthy, within=30, what="/healthz 200 after the first sync")
            pid = daemon.pid

            locker = await asyncpg.connect(pg_url)
            tx = locker.transaction()
            await tx.start()
            await locker.execute(
                f"LOCK TABLE {quote_ident(schema)}.orders IN ACCESS EXCLUSIVE MODE"
            )
            locked_at = time.monotonic()
            first_503: float | None = None
            reason = ""
            changed = 0
            try:
                # Up to LOCK_S, or until the 503 has held for a few probes: what matters is
                # that it comes (before staleness could say it, at 60 s) and stays.
                while (elapsed := time.monotonic() - locked_at) < LOCK_S and (
                    first_503 is None or elapsed < first_503 + HOLD_503_S
                ):
                    if changed < 8:
                        sim.mutate("shop-1", orders_changed=3, orders_new=1)
                        changed += 1
                    status, _ = await get_json(http, f"{base}/livez")
                    assert status == 200, "/livez must not depend on Postgres"
                    status, body = await get_json(http, f"{base}/healthz")
                    if status == 503 and first_503 is None:
                        first_503 = time.monotonic() - locked_at
                        reason = str(body.get("reason"))
                    await asyncio.sleep(1.0)
            finally:
                await tx.rollback()
                await locker.close()
            released_at = time.monotonic()

            assert first_503 is not None and first_503 <= 40, (first_503, daemon.output)
            assert "sync:shop-1:orders" in reason, reason
            assert "lock" in reason, reason

            await eventually(synced, within=30, what="Postgres equal to Temu after the release")
            await eventually(healthy, within=30, what="/healthz 200 again on its own")
            recovered = time.monotonic() - released_at
            assert recovered <= 30, recovered
            assert daemon.returncode is None
            assert daemon.pid == pid
            assert "crashed" not in daemon.output, daemon.output
            print(
                f"healthz 503 after {first_503:.1f} s of lock; equal again {recovered:.1f} s after"
            )
    finally:
        await conn.close()
        if daemon.returncode is None:
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait(20) == 0, daemon.output
