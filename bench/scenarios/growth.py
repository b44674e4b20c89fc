"""Growth (issue 20): sizes per 100,000 orders and updates, planner pass time and retention
at 1 and 10 million `changes` rows (30 million: run bench/growth.py directly, see README)."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import BenchContext
from bench.results import new_doc, target
from bench.scenarios.external import run_script

NAME = "growth"


async def run(ctx: BenchContext, command: str) -> dict[str, Any]:
    orders, millions = (10_000, "1") if ctx.quick else (100_000, "1,10")
    args = ["--database-url", ctx.database_url, "--orders", str(orders)]
    args += ["--changes-millions", millions]
    started = time.monotonic()
    raw = await run_script("growth.py", args, ctx.results / "growth.raw.tmp")
    headline: dict[str, Any] = {}
    targets = []
    for r in raw["planner"]:
        m = r["changes_rows"] // 1_000_000
        ms = r["planner_pass_ms"]["median"]
        headline[f"planner pass at {m}M changes: ms"] = ms
        targets.append(target(f"planner pass at {m}M changes", ms, "<=", 50, "ms"))
    for what, block in raw.get("growth", {}).items():
        if what.startswith("per_"):
            headline[f"{what}: MiB"] = round(
                sum(t["table_mib"] + t["index_mib"] for t in block.values()), 1
            )
    return new_doc(
        NAME,
        machine=ctx.machine,
        simulator=None,
        wall_s=time.monotonic() - started,
        headline=headline,
        targets=targets,
        detail={"script": f"bench/growth.py {' '.join(args[2:])}", "growth": raw},
        command=command,
    )
