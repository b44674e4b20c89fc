"""One module per scenario, each with ``async def run(ctx: BenchContext) -> dict`` returning
its result document (bench/results.py) after drawing its plot."""

SCENARIOS = (
    "pacing",
    "backfill",
    "multishop",
    "mixed",
    "webhooks",
    "diff",
    "baselines",
    "growth",
)
