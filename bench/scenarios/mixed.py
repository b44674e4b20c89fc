"""A backfill on one shop while a live shop on the SAME app is polled and its returns get
labels: how long until a change reaches Postgres, and a label reaches Temu.

The backfill alone would keep 64 requests queued at the app's pacer all the time; only the
priority lanes (reconciler, then incremental, then backfill) let the live shop's calls
overtake that queue. Each probe changes something in the simulator and watches for its effect:
- order change: ``POST /_sim/mutate`` (changed sns, stamped ``now``) until those orders' rows
  in Postgres carry an update_time >= now;
- label: a return of the live shop moves to "waiting for the merchant's label" (status 8) with
  an Orange Connex RMA whose label is ready at once, until Temu has received the upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.harness import BenchContext, counting_service, drop_schema, fresh_schema, settings_for
from bench.measures import percentile, span_rate
from bench.plot import RunPlot, draw
from bench.results import new_doc, target
from bench.simproc import SimProcess, SimSpec
from engine.app.reconciler import reconcile_once
from engine.app.runtime import Runtime, open_runtime
from engine.daemon.reconciler_loop import reconciler_loop
from engine.sync.service import SyncService

NAME = "mixed"
LIMIT = 20.0
BACKFILL_SHOP, LIVE_SHOP = "shop-1", "shop-2"
POLL_S = 5.0
RECONCILE_S = 2.0
WATCH_EVERY_S = 0.1
GIVE_UP_S = 60.0
LABEL_WAITING = 8


def spec(quick: bool) -> SimSpec:
    return SimSpec(
        orders=0,
        shops=2,
        latency_ms=60,
        jitter_ms=10,
        label_ready_after=0,
        orders_by_shop=(30_000 if quick else 100_000, 2_000),
        returns_by_shop=(10, 60),
    )


@dataclass
class Probes:
    t0: float
    changes: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    watchers: list[asyncio.Task[None]] = field(default_factory=list)


async def _until(check: Callable[[], Awaitable[bool]], period_s: float) -> bool:
    deadline = time.monotonic() + GIVE_UP_S
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(period_s)
    return False


async def probe_change(sim: SimProcess, rt: Runtime, probes: Probes) -> None:
    asked = time.time()
    got = await sim.mutate(LIVE_SHOP, orders_changed=2)
    sns, now = got["orders_changed"], got["now"]
    stamp = datetime.fromtimestamp(now, tz=UTC)

    async def stored() -> bool:
        n = await rt.pool.fetchval(
            "SELECT count(*) FROM orders WHERE shop_id = $1 AND parent_order_sn = ANY($2) "
            "AND update_time >= $3",
            LIVE_SHOP,
            sns,
            stamp,
        )
        return bool(n == len(sns))

    ok = await _until(stored, WATCH_EVERY_S)
    seen = time.time()
    probes.changes.append(
        {
            "at_s": round(asked - probes.t0, 2),
            "sns": sns,
            "latency_s": round(seen - asked, 2) if ok else None,
        }
    )


async def probe_label(sim: SimProcess, rt: Runtime, sn: str, probes: Probes) -> None:
    asked = time.time()
    await sim.return_status(LIVE_SHOP, sn, LABEL_WAITING)
    # The simulator opens an RMA for most such returns on its own; make sure this one has one.
    if not any(r["referenceNumber"] == sn for r in await sim.truth("rmas", LIVE_SHOP)):
        await sim.open_rma(LIVE_SHOP, sn)
    synced_at: list[float] = []

    async def uploaded() -> bool:
        if not synced_at:
            status = await rt.pool.fetchval(
                "SELECT status FROM returns WHERE shop_id = $1 AND parent_after_sales_sn = $2",
                LIVE_SHOP,
                sn,
            )
            if status == LABEL_WAITING:
                synced_at.append(time.time())
        return any(u["parentAfterSalesSn"] == sn for u in await sim.truth("uploads", LIVE_SHOP))

    ok = await _until(uploaded, 2 * WATCH_EVERY_S)
    seen = time.time()
    probes.labels.append(
        {
            "at_s": round(asked - probes.t0, 2),
            "sn": sn,
            "synced_s": round(synced_at[0] - asked, 2) if synced_at else None,
            "latency_s": round(seen - asked, 2) if ok else None,
        }
    )


async def poll_loop(service: SyncService, stream: str, stop: asyncio.Event) -> None:
    """What the daemon's SyncLoop does for one shop and stream: a pass every poll interval."""
    nxt = time.monotonic()
    while not stop.is_set():
        await service.incremental_pass(shop_ids=[LIVE_SHOP], streams=[stream])
        nxt += POLL_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, nxt - time.monotonic()))


def _stats(latencies: list[float | None]) -> dict[str, Any]:
    got = [x for x in latencies if x is not None]
    return {
        "n": len(latencies),
        "missed": len(latencies) - len(got),
        "p50_s": percentile(got, 0.5),
        "p90_s": percentile(got, 0.9),
        "max_s": max(got, default=None),
    }


async def run(ctx: BenchContext, command: str) -> dict[str, Any]:
    sim_spec = spec(ctx.quick)
    schema = fresh_schema(NAME)
    started = time.monotonic()
    rng = random.Random(11)
    try:
        async with SimProcess(sim_spec) as sim:
            info = sim.info
            settings = settings_for(
                info,
                database_url=ctx.database_url,
                schema=schema,
                sync={"poll_interval_s": POLL_S},
                reconciler={"interval_s": RECONCILE_S},
            )
            rt = await open_runtime(settings)
            try:
                rows: Counter[str] = Counter()
                service = counting_service(rt, rows)
                # The live shop is caught up first, and labels it was already waiting for are
                # uploaded: the probes then measure steady state, not the first sync.
                await service.incremental_pass(shop_ids=[LIVE_SHOP])
                for _ in range(2):
                    await reconcile_once(rt)
                rmas = {r["referenceNumber"] for r in await sim.truth("rmas", LIVE_SHOP)}
                candidates = [
                    r["parentAfterSalesSn"]
                    for r in await sim.truth("returns", LIVE_SHOP)
                    if r["parentAfterSalesStatus"] != LABEL_WAITING
                    and r["parentAfterSalesSn"] not in rmas
                ]
                rng.shuffle(candidates)
                measured = await _measure(ctx, sim, rt, service, rows, candidates)
            finally:
                await rt.close()
    finally:
        await drop_schema(ctx.database_url, schema)
    return _document(ctx, sim_spec, measured, time.monotonic() - started, command)


async def _measure(
    ctx: BenchContext,
    sim: SimProcess,
    rt: Runtime,
    service: SyncService,
    rows: Counter[str],
    candidates: list[str],
) -> dict[str, Any]:
    info = sim.info
    backfill_orders = info["shops"][0]["orders"]
    since = datetime.fromtimestamp(info["data_range"]["start_ts"], tz=UTC)
    until = datetime.fromtimestamp(info["data_range"]["end_ts"], tz=UTC)
    stop = asyncio.Event()
    await sim.reset_stats()
    t0 = time.time()
    rows_before = dict(rows)
    probes = Probes(t0)
    samples: list[tuple[float, dict[str, int]]] = []
    loops = [asyncio.create_task(poll_loop(service, s, stop)) for s in ("orders", "returns")]
    loops.append(asyncio.create_task(reconciler_loop(rt, stop)))
    backfill = asyncio.create_task(
        service.backfill(since, until, shop_ids=[BACKFILL_SHOP], streams=["orders"])
    )
    every = 2.0 if ctx.quick else 3.0
    k = 0
    # Probes stop once the backfill is 85% done, so every one of them is measured under load.
    while not backfill.done() and rows[BACKFILL_SHOP] < 0.85 * backfill_orders:
        samples.append((time.time() - t0, dict(rows)))
        if k % 2 == 0:
            probes.watchers.append(asyncio.create_task(probe_change(sim, rt, probes)))
        elif candidates:
            sn = candidates.pop()
            probes.watchers.append(asyncio.create_task(probe_label(sim, rt, sn, probes)))
        k += 1
        await asyncio.sleep(every * (0.75 + 0.5 * random.random()))  # no lock-step with polls
    while not backfill.done():
        samples.append((time.time() - t0, dict(rows)))
        await asyncio.sleep(1.0)
    backfill_s = time.time() - t0
    result = backfill.result()
    await asyncio.gather(*probes.watchers)
    stop.set()
    await asyncio.gather(*loops, return_exceptions=True)
    samples.append((time.time() - t0, dict(rows)))
    app = await sim.app_stats()
    return {
        "t0": t0,
        "backfill_s": backfill_s,
        "probes": probes,
        "samples": samples,
        "rows_before": rows_before,
        "app": app,
        "backfill_orders": backfill_orders,
        "failed": {f"{s}/{st}": m for (s, st), m in result.failed.items()},
        "client": {
            "requests": rt.stats.requests,
            "rate_limited": rt.stats.rate_limited,
            "retries": rt.stats.retries,
        },
        "labels_uploaded": rt.counters.labels_uploaded,
    }


def _document(
    ctx: BenchContext, sim_spec: SimSpec, m: dict[str, Any], wall_s: float, command: str
) -> dict[str, Any]:
    probes: Probes = m["probes"]
    t0 = m["t0"]
    change = _stats([c["latency_s"] for c in probes.changes])
    label = _stats([c["latency_s"] for c in probes.labels])
    label_sync = _stats([c["synced_s"] for c in probes.labels])
    accepted = [t for t in m["app"]["accepted_at"] if t >= t0]
    rejected = m["app"]["rejected_rate_limit"] + m["app"]["rejected_storm"]
    base = m["rows_before"]
    shops = sorted({k for _, r in m["samples"] for k in r})
    t_s: list[float] = [round(t, 2) for t, _ in m["samples"]]
    rows_by_shop: dict[str, list[int]] = {
        s: [r.get(s, 0) - base.get(s, 0) for _, r in m["samples"]] for s in shops
    }
    series = {"t_s": t_s, "rows_by_shop": rows_by_shop}
    draw(
        RunPlot(
            title=f"mixed: backfill of {m['backfill_orders']:,} orders + live shop "
            f"(poll {POLL_S:g} s, reconciler {RECONCILE_S:g} s), one app",
            t0=t0,
            limit=LIMIT,
            accepted_at=accepted,
            rejected_at=[t for t in m["app"]["rejected_at"] if t >= t0],
            rows_t=t_s,
            rows=rows_by_shop,
            events={
                "order change -> row in Postgres": [
                    (c["at_s"], c["latency_s"]) for c in probes.changes if c["latency_s"]
                ],
                "return awaits label -> label uploaded": [
                    (c["at_s"], c["latency_s"]) for c in probes.labels if c["latency_s"]
                ],
            },
        ),
        ctx.results / f"{NAME}.png",
    )
    bound = POLL_S + 5.0
    backfill_rate = m["backfill_orders"] / m["backfill_s"]
    headline = {
        "change -> Postgres p50 / max (s)": f"{change['p50_s']} / {change['max_s']}",
        "label -> uploaded p50 / max (s)": f"{label['p50_s']} / {label['max_s']}",
        "backfill orders/s under mixed load": round(backfill_rate, 1),
        "accepted req/s": round(span_rate(accepted), 3),
        "rejected": rejected,
        "probes (changes / labels)": f"{change['n']} / {label['n']}",
    }
    targets = [
        target("change latency max (poll + 5 s)", change["max_s"], "<=", bound, "s"),
        target("label upload latency max (poll + 5 s)", label["max_s"], "<=", bound, "s"),
        target("no probe lost", change["missed"] + label["missed"], "==", 0),
    ]
    detail = {
        "poll_interval_s": POLL_S,
        "reconciler_interval_s": RECONCILE_S,
        "change_latency": change,
        "label_latency": label,
        "label_return_synced": label_sync,
        "changes": probes.changes,
        "labels": probes.labels,
        "backfill_s": round(m["backfill_s"], 2),
        "backfill_orders": m["backfill_orders"],
        "accepted": m["app"]["accepted"],
        "by_type": m["app"]["by_type"],
        "max_accepted_in_1s": m["app"]["max_accepted_in_1s"],
        "client": m["client"],
        "labels_uploaded": m["labels_uploaded"],
        "failed": m["failed"],
        "series": series,
    }
    return new_doc(
        NAME,
        machine=ctx.machine,
        simulator=sim_spec.as_dict(),
        wall_s=wall_s,
        headline=headline,
        targets=targets,
        detail=detail,
        command=command,
    )
