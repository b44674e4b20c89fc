"""A measured backfill against a simulator process: the shared core of the backfill,
multishop and baseline scenarios."""

from __future__ import annotations

import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.harness import (
    BenchContext,
    Sampler,
    counting_service,
    cpu_s,
    drop_schema,
    fresh_schema,
    settings_for,
)
from bench.measures import idle_gaps, memory_trend, sliding_window_max, span_rate
from bench.simproc import SimProcess, SimSpec
from engine.app.runtime import Runtime, open_runtime

ORDER_LIST = "bg.order.list.v2.get"

# Swaps the runtime's pacers before the run (the AsyncLimiter baseline).
RuntimeHook = Callable[[Runtime], None]


@dataclass
class BackfillRun:
    t0: float  # epoch at the start
    elapsed_s: float
    cpu_s: float
    sim_cpu_s: float
    rows: Counter[str]  # records written per shop
    stored: int  # orders rows in Postgres afterwards
    app: dict[str, Any]  # the simulator's counters for the app, arrivals included
    client: dict[str, Any]
    failed: dict[str, str]
    series: dict[str, Any]
    peak_rss_mib: float

    @property
    def orders(self) -> int:
        return sum(self.rows.values())

    def accepted_in_run(self) -> list[float]:
        return [t for t in self.app["accepted_at"] if t >= self.t0]

    def figures(self, limit: float) -> dict[str, Any]:
        """The figures every backfill-shaped scenario reports."""
        accepted = self.accepted_in_run()
        rejected = self.app["rejected_rate_limit"] + self.app["rejected_storm"]
        sent = self.app["accepted"] + rejected
        pages = self.app["by_type"].get(ORDER_LIST, 0)
        rate = span_rate(accepted)
        return {
            "orders": self.orders,
            "orders_in_postgres": self.stored,
            "elapsed_s": round(self.elapsed_s, 2),
            "orders_per_s": round(self.orders / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "accepted_req_per_s": round(rate, 3),
            "limit_utilisation": round(rate / limit, 4),
            "accepted": self.app["accepted"],
            "rejected": rejected,
            "rejected_pct": round(100 * rejected / sent, 3) if sent else 0.0,
            "max_accepted_in_1s": self.app["max_accepted_in_1s"],
            # Against the pacer's ceiling (0.5% under the limit): where the rest of the
            # limit went. Gaps over 150 ms are stalls, not jitter (+-10 ms).
            "idle": idle_gaps(accepted, 1 / (limit * 0.995), late_s=0.15),
            "max_accepted_in_1s_recomputed": sliding_window_max(accepted),
            "pages": pages,
            "client_requests": self.client["requests"],
            "client_rate_limited": self.client["rate_limited"],
            "client_retries": self.client["retries"],
            "cpu_s": round(self.cpu_s, 2),
            "cpu_ms_per_1000_orders": round(1000 * self.cpu_s / self.orders * 1000, 2)
            if self.orders
            else None,
            "cpu_ms_per_page": round(1000 * self.cpu_s / pages, 3) if pages else None,
            "cpu_share_of_one_core": round(self.cpu_s / self.elapsed_s, 3)
            if self.elapsed_s
            else 0.0,
            "simulator_cpu_s": round(self.sim_cpu_s, 2),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "rss": memory_trend(self.series["t_s"], self.series["rss_mib"]),
            "failed": self.failed,
        }


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def measured_backfill(
    sim: SimProcess,
    ctx: BenchContext,
    schema: str,
    *,
    shop_ids: Sequence[str] | None = None,
    hook: RuntimeHook | None = None,
) -> BackfillRun:
    """Backfills the simulator's whole data range (orders only) into a fresh schema."""
    info = sim.info
    settings = settings_for(info, database_url=ctx.database_url, schema=schema)
    since = datetime.fromtimestamp(info["data_range"]["start_ts"], tz=UTC)
    until = datetime.fromtimestamp(info["data_range"]["end_ts"], tz=UTC)
    rt = await open_runtime(settings)
    try:
        if hook is not None:
            hook(rt)
        rows: Counter[str] = Counter()
        service = counting_service(rt, rows)
        await sim.reset_stats()
        sampler = Sampler(rows)
        sampler.start()
        sim_cpu0, cpu0, t0, m0 = sim.cpu_s(), cpu_s(), time.time(), time.monotonic()
        result = await service.backfill(since, until, shop_ids=shop_ids, streams=["orders"])
        elapsed = time.monotonic() - m0
        used = cpu_s() - cpu0
        sim_used = sim.cpu_s() - sim_cpu0
        await sampler.stop()
        app = await sim.app_stats()
        where = "" if shop_ids is None else " WHERE shop_id = ANY($1::text[])"
        args = () if shop_ids is None else (list(shop_ids),)
        stored = await rt.pool.fetchval(f"SELECT count(*) FROM orders{where}", *args)
        failed = {f"{s}/{st}": m for (s, st), m in result.failed.items()}
        if failed:
            print(f"backfill failures: {failed}", file=sys.stderr)
        return BackfillRun(
            t0=t0,
            elapsed_s=elapsed,
            cpu_s=used,
            sim_cpu_s=sim_used,
            rows=rows,
            stored=int(stored),
            app=app,
            client={
                "requests": rt.stats.requests,
                "rate_limited": rt.stats.rate_limited,
                "retries": rt.stats.retries,
            },
            failed=failed,
            series=sampler.series(t0),
            peak_rss_mib=_peak_rss_mib(),
        )
    finally:
        await rt.close()


async def backfill_in_fresh_schema(ctx: BenchContext, name: str, sim_spec: SimSpec) -> BackfillRun:
    """A simulator process for ``sim_spec``, one measured backfill into a schema of its own,
    dropped afterwards (the scenarios' common run)."""
    schema = fresh_schema(name)
    try:
        async with SimProcess(sim_spec) as sim:
            return await measured_backfill(sim, ctx, schema)
    finally:
        await drop_schema(ctx.database_url, schema)
