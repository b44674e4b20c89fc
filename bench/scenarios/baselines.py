"""What the strict pacer buys, on one simulator in one run:
(a) the naive sequential client a seller would write (bench/naive.py);
(b) the engine itself with ``aiolimiter.AsyncLimiter(20, 1)`` (a bucket that bursts) in place
    of its pacer; against temu-sync as it ships. Each backfills its own shop of equal size.

Then the short-run goodput (issue 16): temu-sync alone backfills a shop of the same size from
a second simulator whose forward delay jitters +-30 ms (the simulator's ``jitter_ms`` moves
each request's arrival, the answer's way back is fixed). A few hundred pages: the ramp-up and
the hand-offs between windows weigh here, where the pacing scenario's steady state hides them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import naive
from bench.harness import BenchContext, drop_schema, fresh_schema
from bench.measures import sliding_window_max, span_rate
from bench.pacing import BurstPacer
from bench.plot import Series, draw_compare
from bench.results import new_doc, target
from bench.scenarios.runner import BackfillRun, measured_backfill
from bench.simproc import SimProcess, SimSpec
from engine.app.runtime import Runtime

NAME = "baselines"
LIMIT = 20.0
SHORT_RUN_JITTER_MS = 30.0
SHORT_RUN = "temu-sync +-30 ms"


def spec(quick: bool) -> SimSpec:
    return SimSpec(
        orders=3_000 if quick else 30_000, returns=10, shops=3, latency_ms=60, jitter_ms=10
    )


def short_run_spec(quick: bool) -> SimSpec:
    """One shop of the baselines' size, its arrivals jittered +-30 ms."""
    return SimSpec(
        orders=spec(quick).orders,
        returns=10,
        shops=1,
        latency_ms=60,
        jitter_ms=SHORT_RUN_JITTER_MS,
    )


def use_bursting_pacer(rt: Runtime) -> None:
    for key, transport in rt.transports.items():
        pacer = BurstPacer(rt.pacers[key].qps)
        rt.pacers[key] = pacer
        transport.pacer = pacer


def _engine_figures(run: BackfillRun) -> dict[str, Any]:
    f = run.figures(LIMIT)
    keep = (
        "orders",
        "orders_per_s",
        "accepted_req_per_s",
        "accepted",
        "rejected",
        "rejected_pct",
        "max_accepted_in_1s",
        "client_requests",
        "client_retries",
        "elapsed_s",
        "cpu_ms_per_page",
        "failed",
    )
    return {k: f[k] for k in keep}


async def run(ctx: BenchContext, command: str) -> dict[str, Any]:
    sim_spec = spec(ctx.quick)
    started = time.monotonic()
    engine_runs: dict[str, BackfillRun] = {}
    async with SimProcess(sim_spec) as sim:
        for label, shop, hook in (
            ("temu-sync", "shop-1", None),
            ("AsyncLimiter(20, 1)", "shop-2", use_bursting_pacer),
        ):
            schema = fresh_schema(NAME)
            try:
                engine_runs[label] = await measured_backfill(
                    sim, ctx, schema, shop_ids=[shop], hook=hook
                )
            finally:
                await drop_schema(ctx.database_url, schema)
        await sim.reset_stats()
        info = sim.info
        app, shop = info["apps"][0], info["shops"][2]
        rng = info["data_range"]
        naive_run = await asyncio.to_thread(
            naive.fetch_all,
            info["temu_url"],
            app["app_key"],
            app["app_secret"],
            shop["access_token"],
            rng["start_ts"],
            rng["end_ts"],
        )
        naive_app = await sim.app_stats()
    short_spec = short_run_spec(ctx.quick)
    schema = fresh_schema(NAME)
    try:
        async with SimProcess(short_spec) as sim:
            engine_runs[SHORT_RUN] = await measured_backfill(sim, ctx, schema)
    finally:
        await drop_schema(ctx.database_url, schema)
    return _document(
        ctx,
        sim_spec,
        short_spec,
        engine_runs,
        naive_run,
        naive_app,
        time.monotonic() - started,
        command,
    )


def _naive_figures(run: naive.NaiveRun, app: dict[str, Any]) -> dict[str, Any]:
    accepted = [t for t in app["accepted_at"] if t >= run.started]
    rejected = app["rejected_rate_limit"] + app["rejected_storm"]
    sent = app["accepted"] + rejected
    return {
        "orders": run.orders,
        "orders_per_s": round(run.orders / run.elapsed_s, 1),
        "accepted_req_per_s": round(span_rate(accepted), 3),
        "accepted": app["accepted"],
        "rejected": rejected,
        "rejected_pct": round(100 * rejected / sent, 3) if sent else 0.0,
        "max_accepted_in_1s": sliding_window_max(accepted),
        "client_requests": run.requests,
        "client_retries": run.rejected,
        "elapsed_s": round(run.elapsed_s, 2),
        "cpu_ms_per_page": None,
        "failed": {},
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _document(
    ctx: BenchContext,
    sim_spec: SimSpec,
    short_spec: SimSpec,
    engine_runs: dict[str, BackfillRun],
    naive_run: naive.NaiveRun,
    naive_app: dict[str, Any],
    wall_s: float,
    command: str,
) -> dict[str, Any]:
    clients = {label: _engine_figures(r) for label, r in engine_runs.items() if label != SHORT_RUN}
    short = _engine_figures(engine_runs[SHORT_RUN])
    clients["naive sequential (sleep 50 ms)"] = _naive_figures(naive_run, naive_app)
    ref = clients["temu-sync"]
    ratios = {
        label: {k: _ratio(c[k], ref[k]) for k in ("accepted_req_per_s", "orders_per_s")}
        for label, c in clients.items()
        if label != "temu-sync"
    }
    series = [
        Series(
            label,
            r.t0,
            r.accepted_in_run(),
            [t for t in r.app["rejected_at"] if t >= r.t0],
            r.series["t_s"],
            [sum(v) for v in zip(*r.series["rows_by_shop"].values(), strict=True)],
        )
        for label, r in engine_runs.items()
    ]
    series.append(
        Series(
            "naive sequential",
            naive_run.started,
            [t for t in naive_app["accepted_at"] if t >= naive_run.started],
            [t for t in naive_app["rejected_at"] if t >= naive_run.started],
            [t - naive_run.started for t, _ in naive_run.progress],
            [n for _, n in naive_run.progress],
        )
    )
    draw_compare(
        f"baselines: {sim_spec.orders:,} orders each, 60 ms +- 10 ms (+- 30 ms where named)",
        series,
        LIMIT,
        ctx.results / f"{NAME}.png",
    )
    burst = clients["AsyncLimiter(20, 1)"]
    naive_c = clients["naive sequential (sleep 50 ms)"]
    headline: dict[str, Any] = {}
    for label, c in clients.items():
        headline[f"{label}: accepted req/s"] = c["accepted_req_per_s"]
        headline[f"{label}: orders/s"] = c["orders_per_s"]
        headline[f"{label}: rejected"] = c["rejected"]
    headline["AsyncLimiter(20, 1): client retries"] = burst["client_retries"]
    headline["naive / temu-sync goodput"] = ratios["naive sequential (sleep 50 ms)"][
        "accepted_req_per_s"
    ]
    headline["AsyncLimiter / temu-sync goodput"] = ratios["AsyncLimiter(20, 1)"][
        "accepted_req_per_s"
    ]
    headline[f"{SHORT_RUN}: accepted req/s"] = short["accepted_req_per_s"]
    headline[f"{SHORT_RUN}: rejected %"] = short["rejected_pct"]
    headline[f"{SHORT_RUN}: busiest second"] = short["max_accepted_in_1s"]
    targets = [
        target("temu-sync rejections", ref["rejected"], "<=", 0),
        target(
            "temu-sync goodput / naive",
            _ratio(ref["accepted_req_per_s"], naive_c["accepted_req_per_s"]),
            ">=",
            1.0,
        ),
        # Accepted requests over the busy span (first to last accepted arrival, span_rate),
        # every request the backfill needed and nothing else.
        target(
            f"short-run goodput at +-30 ms ({short_spec.orders:,} orders)",
            short["accepted_req_per_s"],
            ">=",
            19.3,
            "req/s",
        ),
        target("short-run rejections at +-30 ms", short["rejected_pct"], "<=", 1.0, "%"),
        target("short-run busiest second at +-30 ms", short["max_accepted_in_1s"], "<=", LIMIT),
    ]
    return new_doc(
        NAME,
        machine=ctx.machine,
        simulator=sim_spec.as_dict(),
        wall_s=wall_s,
        headline=headline,
        targets=targets,
        detail={
            "clients": clients,
            "ratios_to_temu_sync": ratios,
            "short_run": {
                "simulator": short_spec.as_dict(),
                "figures": engine_runs[SHORT_RUN].figures(LIMIT),
            },
        },
        command=command,
    )
