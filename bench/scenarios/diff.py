"""Diff-writer throughput (inserts, updates, no-ops) against its references: bench/diff.py."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import BenchContext
from bench.plot import draw_bars
from bench.results import new_doc, target
from bench.scenarios.external import run_script

NAME = "diff"

# Issue 16: the writer against the references measured in the same run (bench/diff.py).
RATIO_TARGETS = {"insert": 0.8, "update": 1.2, "noop": 4.0}


async def run(ctx: BenchContext, command: str) -> dict[str, Any]:
    # bench/diff.py's default (200k orders, batches of 100 and 1000) takes minutes here; the
    # suite keeps the engine's page size and half the orders to stay inside 10 minutes.
    orders = 10_000 if ctx.quick else 100_000
    args = ["--database-url", ctx.database_url, "--orders", str(orders), "--batch-sizes", "100"]
    started = time.monotonic()
    raw = await run_script("diff.py", args, ctx.results / "diff.raw.tmp")
    result = next(r for r in raw["results"] if r["batch"] == 100)
    phases = {p["phase"]: p for p in result["phases"]}
    vs_copy = result["vs_copy"]
    headline: dict[str, Any] = {f"{name}: vs reference": vs_copy[name] for name in RATIO_TARGETS}
    headline.update({f"{name}: rows/s": p["rows_per_s"] for name, p in phases.items()})
    headline.update(
        {
            f"{name}: reference rows/s": p["reference"]["rows_per_s"]
            for name, p in phases.items()
            if "reference" in p
        }
    )
    headline.update({f"{name}: CPU ms/page": p["cpu_ms_per_batch"] for name, p in phases.items()})
    wording = {
        "insert": "insert / binary COPY",
        "update": "update / COPY + UPDATE FROM",
        "noop": "no-op / binary COPY",
    }
    targets = [
        target(f"{wording[name]} (rows/s ratio)", vs_copy[name], ">=", want, "x")
        for name, want in RATIO_TARGETS.items()
    ]
    copy_rate = float(phases["insert"]["reference"]["rows_per_s"])
    bars = {
        name: {
            "temu-sync writer": float(p["rows_per_s"]),
            "reference": float(p["reference"]["rows_per_s"]) if "reference" in p else copy_rate,
        }
        for name, p in phases.items()
    }
    draw_bars(
        f"diff writer vs references (no-op: vs binary COPY): {orders:,} orders, pages of 100",
        bars,
        "orders + lines / s",
        ctx.results / f"{NAME}.png",
    )
    doc = new_doc(
        NAME,
        machine=ctx.machine,
        simulator=None,
        wall_s=time.monotonic() - started,
        headline=headline,
        targets=targets,
        detail={
            "script": f"bench/diff.py --orders {orders} --batch-sizes 100",
            "vs_copy": vs_copy,
            "diff": raw,
        },
        command=command,
    )
    doc["vs_copy"] = vs_copy  # issue 16's figure: writer rows/s over the reference's
    return doc
