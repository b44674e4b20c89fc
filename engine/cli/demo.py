"""`temu-sync demo`: the whole product on a fresh machine, with nothing to configure.

Embedded Postgres + the built-in simulator (Temu and Orange Connex) + the engine: a backfill,
changes in the simulator picked up by incremental passes, a reconciler pass that uploads return
labels, and a summary a person can read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

from engine.app.reconciler import reconcile_once
from engine.app.runtime import Runtime, open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.config import Settings
from engine.sim.config import SimConfig
from engine.sim.server import Simulator

DEMO_SCHEMA = "temu_sync_demo"
ORDERS_PER_SHOP = 4000
RETURNS_PER_SHOP = 120


def demo_settings(sim: Simulator, config: SimConfig, data_dir: Path) -> Settings:
    settings = settings_for_simulator(sim, config, schema=DEMO_SCHEMA, data_dir=data_dir)
    # The simulated warehouse answers at once; no need to be as polite as with the real one.
    return replace(settings, orange_connex=replace(settings.orange_connex, qps=20.0))


def _pg_dir(data_dir: Path) -> Path:
    return data_dir.resolve() / "pg"


def _line(text: str = "") -> None:
    print(text, flush=True)


async def _counts(rt: Runtime) -> dict[str, int]:
    out = {}
    for table in ("orders", "order_lines", "returns", "return_lines", "changes", "outbox"):
        out[table] = int(await rt.pool.fetchval(f"SELECT count(*) FROM {table}"))
    return out


def _rows(rt: Runtime, entity: str) -> str:
    c = rt.counters.entity(entity)
    return f"{c.inserted:>6} new  {c.updated:>5} changed  {c.unchanged:>6} unchanged"


async def run_demo(data_dir: Path = Path(".temu-sync")) -> int:
    t0 = time.monotonic()
    config = SimConfig.default(
        orders=ORDERS_PER_SHOP,
        returns=RETURNS_PER_SHOP,
        shops=2,
        latency_ms=40,
        jitter_ms=10,
        oc_label_ready_after=1,
    )
    _line("temu-sync demo: embedded Postgres + built-in Temu/Orange Connex simulator")
    _line(
        f"  simulator: {len(config.shops)} shops on one app (limit {config.apps[0].qps} "
        f"req/s), {ORDERS_PER_SHOP:,} orders and {RETURNS_PER_SHOP} returns per shop"
    )
    async with Simulator(config) as sim:
        settings = demo_settings(sim, config, data_dir)
        _line(
            f"  database:  embedded Postgres under {_pg_dir(data_dir)}, "
            f"schema {DEMO_SCHEMA} (reset on every demo run)"
        )
        rt = await _open_fresh(settings)
        try:
            since = settings.sync.start
            limit = settings.apps[0].qps

            _line("\n1. Backfill of the whole history")
            rt.reset_clock()
            await rt.sync_service().backfill(since, None)
            s = rt.summary()
            _line(
                f"   {s['requests']} requests in {s['elapsed_s']} s = {s['qps']} req/s "
                f"({float(s['qps']) / limit:.0%} of the {limit:g} req/s limit), "  # type: ignore[arg-type]
                f"{s['rate_limited']} rate-limited"
            )
            _line(f"   orders   {_rows(rt, 'order')}")
            _line(f"   returns  {_rows(rt, 'return')}")

            _line(
                "\n2. Changes in Temu (1% of orders changed, new orders and returns), "
                "then an incremental pass"
            )
            for shop in config.shops:
                sim.mutate(
                    shop.shop_id,
                    orders_changed=ORDERS_PER_SHOP // 100,
                    orders_new=25,
                    returns_changed=10,
                    returns_new=5,
                )
            await asyncio.sleep(1.5)
            rt.counters.rows.clear()
            rt.reset_clock()
            await rt.sync_service().incremental_pass()
            _line(f"   orders   {_rows(rt, 'order')}")
            _line(f"   returns  {_rows(rt, 'return')}")

            _line("\n3. Reconciler: return labels from Orange Connex to Temu")
            await _reconcile(rt, sim)

            _line("\n4. Another incremental pass with nothing new: nothing is written")
            rt.counters.rows.clear()
            await asyncio.sleep(1.0)
            await rt.sync_service().incremental_pass()
            c = rt.counters.entity("order")
            _line(
                f"   orders   {c.inserted} new, {c.updated} changed "
                f"(unchanged rows are compared, not rewritten)"
            )

            counts = await _counts(rt)
            _line("\nIn Postgres now:")
            _line("   " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
            truth = sum(len(sim.truth_orders(s.shop_id)) for s in config.shops)
            verdict = "equal to" if truth == counts["orders"] else "DIFFERENT FROM"
            _line(f"   {counts['orders']:,} orders stored, {verdict} the simulator's {truth:,}")
            _line(f"\nDone in {time.monotonic() - t0:.1f} s. Look around with:")
            _line(
                f"   psql '{rt.settings.database.url or await _url(rt)}' "
                f"-c 'SET search_path={DEMO_SCHEMA}' -c 'SELECT * FROM returns_normalized "
                f"LIMIT 5'"
            )
        finally:
            await rt.close()
    return 0


async def _url(rt: Runtime) -> str:
    return rt.embedded.url if rt.embedded is not None and rt.embedded.url else ""


async def _open_fresh(settings: Settings) -> Runtime:
    rt = await open_runtime(settings, apply_migrations=False)
    await rt.pool.execute(f"DROP SCHEMA IF EXISTS {DEMO_SCHEMA} CASCADE")
    await rt.close()
    return await open_runtime(replace(settings))


async def _reconcile(rt: Runtime, sim: Simulator) -> None:
    before = len(sim.uploads())
    for _ in range(3):  # labels not ready at first become ready on a later pass
        await reconcile_once(rt)
    uploads = sim.uploads()[before:]
    _line(
        f"   {rt.counters.labels_uploaded} labels uploaded to Temu, "
        f"{rt.counters.oc_updates} updates pushed to Orange Connex"
    )
    for up in uploads[:5]:
        dto = (up.get("returnLabelDTOList") or [{}])[0]
        _line(
            f"   - {up['parentAfterSalesSn']}: tracking {dto.get('trackingNumber')} "
            f"carrier {dto.get('carrierId')} warehouse {dto.get('mallWarehouseId')}"
        )
