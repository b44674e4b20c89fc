"""One shop's 200,000-order history at 60 ms +- 10 ms: throughput, engine CPU, memory."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import BenchContext
from bench.plot import RunPlot, draw
from bench.results import new_doc, target
from bench.scenarios.runner import backfill_in_fresh_schema
from bench.simproc import SimSpec

NAME = "backfill"
LIMIT = 20.0


def spec(quick: bool) -> SimSpec:
    return SimSpec(
        orders=20_000 if quick else 200_000, returns=10, shops=1, latency_ms=60, jitter_ms=10
    )


async def run(ctx: BenchContext, command: str) -> dict[str, Any]:
    sim_spec = spec(ctx.quick)
    started = time.monotonic()
    result = await backfill_in_fresh_schema(ctx, NAME, sim_spec)
    fig = result.figures(LIMIT)
    series = result.series
    draw(
        RunPlot(
            title=f"backfill: {result.orders:,} orders, 1 shop, 60 ms +- 10 ms",
            t0=result.t0,
            limit=LIMIT,
            accepted_at=result.accepted_in_run(),
            rejected_at=[t for t in result.app["rejected_at"] if t >= result.t0],
            rows_t=series["t_s"],
            rows=series["rows_by_shop"],
            rss_t=series["t_s"],
            rss_mib=series["rss_mib"],
        ),
        ctx.results / f"{NAME}.png",
    )
    headline = {
        "orders": fig["orders"],
        "orders/s": fig["orders_per_s"],
        "accepted req/s": fig["accepted_req_per_s"],
        "rejected": fig["rejected"],
        "max accepted in 1 s": fig["max_accepted_in_1s"],
        "CPU ms / page of 100": fig["cpu_ms_per_page"],
        "CPU ms / 1,000 orders": fig["cpu_ms_per_1000_orders"],
        "peak RSS MiB": fig["peak_rss_mib"],
        "RSS slope MiB/min": fig["rss"]["slope_mib_per_min"],
        "rate below the pacer's ceiling %": fig["idle"]["deficit_pct"],
        "send stalls > 150 ms": fig["idle"]["stalls"],
    }
    targets = [
        target("orders/s per app", fig["orders_per_s"], ">=", 1950, "orders/s"),
        target("goodput at +-10 ms", fig["accepted_req_per_s"], ">=", 19.6, "req/s"),
        target("rejections at +-10 ms", fig["rejected"], "<=", 0),
        target("max accepted in any 1 s", fig["max_accepted_in_1s_recomputed"], "<=", LIMIT),
        target("CPU per page of 100", fig["cpu_ms_per_page"], "<=", 5.0, "ms"),
        target(
            "memory flat (fitted growth)",
            fig["rss"]["growth_mib"],
            "<=",
            max(8.0, 0.05 * fig["rss"]["max_mib"]),
            "MiB",
        ),
        target("every order stored", fig["orders_in_postgres"], "==", sim_spec.orders),
    ]
    return new_doc(
        NAME,
        machine=ctx.machine,
        simulator=sim_spec.as_dict(),
        wall_s=time.monotonic() - started,
        headline=headline,
        targets=targets,
        detail={"figures": fig, "series": series},
        command=command,
    )
