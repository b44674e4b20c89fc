"""SIGKILL in the middle of a backfill, then the same command again: no gap, no duplicate."""

from __future__ import annotations

import asyncio
import random
import signal
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

from engine.app.sim_settings import config_toml_for_simulator
from engine.sim.config import SimConfig
from tests.fixtures_proc import EngineProcess
from tests.fixtures_sim import SimFactory

ORDERS = 8_000


def _backfill(config_path: Path, since: str, name: str) -> EngineProcess:
    args = ["--config", str(config_path), "backfill", "--since", since, "--stream", "orders"]
    return EngineProcess(config_path.parent, name, [*args, "--json"])


async def test_sigkill_mid_backfill_then_rerun_equals_truth(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    config = SimConfig.default(
        orders=ORDERS, returns=0, shops=1, qps=40, seed=3, latency_ms=20, jitter_ms=5
    )
    sim = await sim_factory(config)
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        config_toml_for_simulator(
            sim, config, database_url=pg_url, schema=schema, extra="[reconciler]\nenabled = false\n"
        )
    )
    start, _ = config.time_range()
    since = datetime.fromtimestamp(start, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rng = random.Random(11)
    kills = 0
    conn = await asyncpg.connect(pg_url, server_settings={"search_path": schema})
    try:
        for trial in range(3):
            proc = await _backfill(cfg, since, f"killed{trial}").start()
            target = rng.randint(500, ORDERS // 2) * (trial + 1) // 2
            killed = False
            for _ in range(600):
                await asyncio.sleep(0.05)
                if proc.returncode is not None:
                    break
                try:
                    n = await conn.fetchval("SELECT count(*) FROM orders")
                except asyncpg.UndefinedTableError:
                    continue
                if n >= target:
                    await proc.kill()
                    killed = True
                    break
            await proc.wait(60)
            if killed:
                assert proc.returncode == -signal.SIGKILL
                kills += 1
        assert kills >= 2, "the backfill finished before it could be killed"
        partial = await conn.fetchval("SELECT count(*) FROM orders")
        assert partial < ORDERS
        final = await _backfill(cfg, since, "final").start()
        await final.wait(90)
        final.assert_ok()

        want = {o["parentOrderMap"]["parentOrderSn"]: o for o in sim.truth_orders("shop-1")}
        rows = await conn.fetch("SELECT parent_order_sn, payload FROM orders")
        got = {r["parent_order_sn"]: orjson.loads(r["payload"]) for r in rows}
        assert set(got) == set(want)
        assert all(got[sn] == want[sn] for sn in want)
        # Exactly one 'insert' change per order: no duplicate despite the kills and re-reads.
        dup = await conn.fetchval(
            "SELECT count(*) FROM (SELECT entity_key FROM changes WHERE entity = 'order' "
            "GROUP BY entity_key HAVING count(*) > 1) d"
        )
        assert dup == 0
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM changes WHERE entity = 'order' AND op = 'insert'"
            )
            == ORDERS
        )
    finally:
        await conn.close()
