"""Five shops on one app, all backfilled at once: the shared limit holds, no shop starves."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import BenchContext
from bench.measures import jain_fairness, longest_stall
from bench.plot import RunPlot, draw
from bench.results import new_doc, target
from bench.scenarios.runner import backfill_in_fresh_schema
from bench.simproc import SimSpec

NAME = "multishop"
LIMIT = 20.0
SHOPS = 5


def spec(quick: bool) -> SimSpec:
    return SimSpec(
        orders=4_000 if quick else 20_000, returns=10, shops=SHOPS, latency_ms=60, jitter_ms=10
    )


def progress(series: dict[str, Any], per_shop: int) -> dict[str, Any]:
    """Per shop: when it finished, and its share of the records written in the time every
    shop was still busy (the window in which starvation would show)."""
    t = series["t_s"]
    rows = series["rows_by_shop"]
    done_at = {
        shop: next((t[i] for i, n in enumerate(v) if n >= per_shop), None)
        for shop, v in rows.items()
    }
    finished = [d for d in done_at.values() if d is not None]
    first_done = min(finished) if finished else t[-1]
    # The last sample before any shop finished: all five were competing up to here.
    k = max((i for i, ts in enumerate(t) if ts < first_done), default=0)
    shares = {shop: v[k] for shop, v in rows.items()}
    total = sum(shares.values())
    return {
        "finished_at_s": done_at,
        "longest_stall_s": {shop: longest_stall(t, v, per_shop) for shop, v in rows.items()},
        "all_busy_until_s": t[k],
        "records_while_all_busy": shares,
        "share_pct": {s: round(100 * n / total, 1) if total else 0.0 for s, n in shares.items()},
        "jain_fairness": round(jain_fairness(list(shares.values())), 4),
        "min_rate_while_all_busy": round(min(shares.values()) / t[k], 1) if t[k] else 0.0,
    }


async def run(ctx: BenchContext, command: str) -> dict[str, Any]:
    sim_spec = spec(ctx.quick)
    started = time.monotonic()
    result = await backfill_in_fresh_schema(ctx, NAME, sim_spec)
    fig = result.figures(LIMIT)
    series = result.series
    prog = progress(series, sim_spec.orders)
    draw(
        RunPlot(
            title=f"multishop: {SHOPS} shops x {sim_spec.orders:,} orders on one app",
            t0=result.t0,
            limit=LIMIT,
            accepted_at=result.accepted_in_run(),
            rejected_at=[t for t in result.app["rejected_at"] if t >= result.t0],
            rows_t=series["t_s"],
            rows=series["rows_by_shop"],
        ),
        ctx.results / f"{NAME}.png",
    )
    finish = [v for v in prog["finished_at_s"].values() if v is not None]
    headline = {
        "orders (all shops)": fig["orders"],
        "orders/s": fig["orders_per_s"],
        "accepted req/s": fig["accepted_req_per_s"],
        "rejected": fig["rejected"],
        "max accepted in 1 s": fig["max_accepted_in_1s_recomputed"],
        "fairness (Jain, 1 = equal)": prog["jain_fairness"],
        "slowest shop orders/s while all busy": prog["min_rate_while_all_busy"],
        "longest stall of any shop (s)": max(prog["longest_stall_s"].values(), default=0.0),
        "first / last shop done (s)": f"{min(finish):.0f} / {max(finish):.0f}" if finish else "-",
    }
    targets = [
        target(
            "max accepted in any 1 s (shared)", fig["max_accepted_in_1s_recomputed"], "<=", LIMIT
        ),
        target("orders/s per app", fig["orders_per_s"], ">=", 1950, "orders/s"),
        target("every shop progressed (fairness)", prog["jain_fairness"], ">=", 0.9),
        target("every shop finished", len(finish), "==", SHOPS),
    ]
    return new_doc(
        NAME,
        machine=ctx.machine,
        simulator=sim_spec.as_dict(),
        wall_s=time.monotonic() - started,
        headline=headline,
        targets=targets,
        detail={"figures": fig, "progress": prog, "series": series},
        command=command,
    )
