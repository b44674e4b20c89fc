"""Diff-writer throughput (inserts, updates, no-ops): bench/diff.py, folded in."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import BenchContext
from bench.plot import draw_bars
from bench.results import new_doc, target
from bench.scenarios.external import run_script

NAME = "diff"


async def run(ctx: BenchContext, command: str) -> dict[str, Any]:
    # bench/diff.py's default (200k orders, batches of 100 and 1000) takes ~4 minutes here;
    # the suite keeps the engine's page size and half the orders to stay inside 10 minutes.
    orders = 10_000 if ctx.quick else 100_000
    args = ["--database-url", ctx.database_url, "--orders", str(orders), "--batch-sizes", "100"]
    started = time.monotonic()
    raw = await run_script("diff.py", args, ctx.results / "diff.raw.tmp")
    phases = {p["phase"]: p for r in raw["results"] for p in r["phases"] if r["batch"] == 100}
    headline = {f"{name}: rows/s": p["rows_per_s"] for name, p in phases.items()}
    headline.update({f"{name}: orders/s": p["orders_per_s"] for name, p in phases.items()})
    # The 50,000 rows/s target is read per phase: inserts and updates write every row (plus a
    # changes row each), no-ops only compare, so each phase gets its own verdict.
    targets = [
        target(f"{name} rows/s (orders + lines)", p["rows_per_s"], ">=", 50_000, "rows/s")
        for name, p in phases.items()
    ]
    bars = {
        name: {"orders + lines / s": float(p["rows_per_s"]), "orders / s": float(p["orders_per_s"])}
        for name, p in phases.items()
    }
    draw_bars(
        f"diff writer: {orders:,} orders (~2 lines each), pages of 100",
        bars,
        "rows / s",
        ctx.results / f"{NAME}.png",
        limit=50_000,
    )
    return new_doc(
        NAME,
        machine=ctx.machine,
        simulator=None,
        wall_s=time.monotonic() - started,
        headline=headline,
        targets=targets,
        detail={"script": f"bench/diff.py --orders {orders} --batch-sizes 100", "diff": raw},
        command=command,
    )
