"""Goodput against the strict limit at +-10 and +-30 ms jitter: bench/pacing.py, folded in."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import BenchContext
from bench.plot import draw_bars
from bench.results import new_doc, target
from bench.scenarios.external import run_script

NAME = "pacing"


def _run(doc: dict[str, Any], jitter: float, strategy: str) -> dict[str, Any] | None:
    return next(
        (r for r in doc["runs"] if r["jitter_ms"] == jitter and r["strategy"] == strategy), None
    )


async def run(ctx: BenchContext, command: str) -> dict[str, Any]:
    duration = 8 if ctx.quick else 20
    args = ["--duration", str(duration), "--jitters", "10,30"]
    started = time.monotonic()
    raw = await run_script("pacing.py", args, ctx.results / "pacing.raw.tmp")
    headline: dict[str, Any] = {}
    targets = []
    for jitter, want, max_rej in ((10.0, 19.6, 0.0), (30.0, 19.0, 1.0)):
        mine = _run(raw, jitter, "adaptive")
        burst = _run(raw, jitter, "burst_baseline")
        if mine is None:
            continue
        headline[f"+-{jitter:g} ms: accepted req/s"] = mine["accepted_per_s"]
        headline[f"+-{jitter:g} ms: rejected %"] = mine["rejected_pct"]
        headline[f"+-{jitter:g} ms: busiest second"] = mine["max_accepted_in_1s"]
        if burst is not None:
            headline[f"+-{jitter:g} ms: AsyncLimiter(20,1) accepted req/s"] = burst[
                "accepted_per_s"
            ]
            headline[f"+-{jitter:g} ms: AsyncLimiter(20,1) rejected %"] = burst["rejected_pct"]
        targets.append(
            target(f"goodput at +-{jitter:g} ms", mine["accepted_per_s"], ">=", want, "req/s")
        )
        targets.append(
            target(f"rejections at +-{jitter:g} ms", mine["rejected_pct"], "<=", max_rej, "%")
        )
    # bench/pacing.py keeps no arrival times, so the plot compares the runs side by side.
    bars = {
        f"+-{r['jitter_ms']:g} ms, {r['strategy']}": {
            "accepted / s": r["accepted_per_s"],
            "busiest second": r["max_accepted_in_1s"],
            "rejected %": r["rejected_pct"],
        }
        for r in raw["runs"]
    }
    draw_bars(
        "pacing: strict pacer (adaptive) vs AsyncLimiter(20, 1), 60 ms latency",
        bars,
        "requests / s, or %",
        ctx.results / f"{NAME}.png",
        limit=raw["qps_limit"],
    )
    simulator = {
        "latency_ms": 60.0,
        "jitters_ms": [10.0, 30.0],
        "qps": raw["qps_limit"],
        "strict_window": True,
        "process": "separate",
        "orders": 2000,
        "shops": 1,
        "callers": raw["callers"],
        "duration_s": raw["duration_s"],
    }
    return new_doc(
        NAME,
        machine=ctx.machine,
        simulator=simulator,
        wall_s=time.monotonic() - started,
        headline=headline,
        targets=targets,
        detail={"script": "bench/pacing.py " + " ".join(args), "pacing": raw},
        command=command,
    )
