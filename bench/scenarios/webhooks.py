"""Webhooks under load: a backfill saturates the app (shop-1) while the simulator delivers
events for changes to a live shop on the SAME app (shop-2), with no polling at all. Measured:
- event -> row: from asking the simulator for a change (it sends the event at once) until the
  changed records are in Postgres (probe-side, every 0.1 s), p50 / p99 / max;
- receiver answer: the receiver's own time for each POST (the daemon's
  ``temu_sync_webhook_receive_seconds``), p50 / p99 / max, and whether Temu (the simulator)
  saw any answer later than 500 ms or other than 200.
The receiver and the consumer are the daemon's own assembly (daemon/webhook_service.py).
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bench.harness import BenchContext, counting_service, drop_schema, fresh_schema, settings_for
from bench.measures import percentile, span_rate
from bench.plot import RunPlot, draw
from bench.results import new_doc, target
from bench.simproc import SimProcess, SimSpec
from engine.app.runtime import Runtime, open_runtime
from engine.config import WebhooksSettings
from engine.daemon.http import stop_http
from engine.daemon.metrics import Metrics
from engine.daemon.supervisor import Supervisor
from engine.daemon.webhook_service import start_webhooks
from engine.sync.service import SyncService
from engine.temu.subscriptions import subscribe_shops

NAME = "webhooks"
LIMIT = 20.0
BACKFILL_SHOP, LIVE_SHOP = "shop-1", "shop-2"
WATCH_EVERY_S = 0.1
GIVE_UP_S = 60.0
WITHIN_S = 5.0  # issue 18: every change in Postgres within 5 s of its event
ANSWER_S = 0.5  # Temu counts a slower answer as a failed delivery


def spec(quick: bool) -> SimSpec:
    return SimSpec(
        orders=0,
        shops=2,
        latency_ms=60,
        jitter_ms=10,
        orders_by_shop=(30_000 if quick else 100_000, 2_000),
        returns_by_shop=(10, 60),
    )


class RecordingMetrics(Metrics):
    """The daemon's metrics, keeping every raw observation for exact percentiles."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[int, float]] = []
        self.processed: list[tuple[str, float]] = []

    def on_answer(self, status: int, seconds: float) -> None:
        super().on_answer(status, seconds)
        self.answers.append((status, seconds))

    def on_processed(self, code: str, outcome: str, latency_s: float) -> None:
        super().on_processed(code, outcome, latency_s)
        self.processed.append((outcome, latency_s))


@dataclass
class Probes:
    t0: float
    changes: list[dict[str, Any]] = field(default_factory=list)
    watchers: list[asyncio.Task[None]] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def probe(sim: SimProcess, rt: Runtime, probes: Probes, with_return: bool) -> None:
    asked = time.time()
    got = await sim.mutate(LIVE_SHOP, orders_changed=5, returns_changed=int(with_return))
    orders, returns = got["orders_changed"], got["returns_changed"]
    stamp = datetime.fromtimestamp(got["now"], tz=UTC)

    async def stored() -> bool:
        n = await rt.pool.fetchval(
            "SELECT (SELECT count(*) FROM orders WHERE shop_id = $1 "
            "AND parent_order_sn = ANY($2) AND update_time >= $4) + "
            "(SELECT count(*) FROM returns WHERE shop_id = $1 "
            "AND parent_after_sales_sn = ANY($3) AND update_at >= $4)",
            LIVE_SHOP,
            orders,
            returns,
            stamp,
        )
        return bool(n == len(orders) + len(returns))

    deadline = time.monotonic() + GIVE_UP_S
    ok = False
    while time.monotonic() < deadline:
        if await stored():
            ok = True
            break
        await asyncio.sleep(WATCH_EVERY_S)
    seen = time.time()
    probes.changes.append(
        {
            "at_s": round(asked - probes.t0, 2),
            "records": len(orders) + len(returns),
            "latency_s": round(seen - asked, 3) if ok else None,
        }
    )


def _stats(values: list[float | None]) -> dict[str, Any]:
    got = [x for x in values if x is not None]
    return {
        "n": len(values),
        "missed": len(values) - len(got),
        # Nothing measured is no figure (a target then counts as missed), not 0.
        "p50_s": percentile(got, 0.5) if got else None,
        "p99_s": percentile(got, 0.99) if got else None,
        "max_s": max(got, default=None),
    }


async def run(ctx: BenchContext, command: str) -> dict[str, Any]:
    sim_spec = spec(ctx.quick)
    schema = fresh_schema(NAME)
    started = time.monotonic()
    port = _free_port()
    try:
        async with SimProcess(sim_spec) as sim:
            settings = settings_for(
                sim.info,
                database_url=ctx.database_url,
                schema=schema,
                sync={"poll_interval_s": 300},
            )
            settings = replace(
                settings, webhooks=WebhooksSettings(enabled=True, listen=f"127.0.0.1:{port}")
            )
            rt = await open_runtime(settings)
            try:
                measured = await _measure(ctx, sim, rt, port)
            finally:
                await rt.close()
    finally:
        await drop_schema(ctx.database_url, schema)
    return _document(ctx, sim_spec, measured, time.monotonic() - started, command)


async def _measure(ctx: BenchContext, sim: SimProcess, rt: Runtime, port: int) -> dict[str, Any]:
    rows: Counter[str] = Counter()
    service: SyncService = counting_service(rt, rows)
    # The live shop is caught up first (its token check gives the receiver its mallId), and
    # subscribed to the events, as `temu-sync webhooks subscribe` would.
    # (The runtime's own service: the counting one has no token gate, so no token check.)
    await rt.sync_service().incremental_pass(shop_ids=[LIVE_SHOP])
    subscribed = await subscribe_shops([rt.shop_apis[LIVE_SHOP]], rt.settings.webhooks.events)
    if not all(r.ok for r in subscribed):
        raise RuntimeError(f"subscription refused: {subscribed}")
    stop = asyncio.Event()
    supervisor = Supervisor(stop)
    metrics = RecordingMetrics()
    runner = await start_webhooks(
        rt,
        supervisor=supervisor,
        metrics=metrics,
        owned_shops=lambda: [s.id for s in rt.settings.shops],
    )
    await sim.configure_webhooks(
        url=f"http://127.0.0.1:{port}/temu/events", duplicate_rate=0.3, seed=5
    )
    info = sim.info
    backfill_orders = info["shops"][0]["orders"]
    since = datetime.fromtimestamp(info["data_range"]["start_ts"], tz=UTC)
    until = datetime.fromtimestamp(info["data_range"]["end_ts"], tz=UTC)
    await sim.reset_stats()
    rng = random.Random(13)
    t0 = time.time()
    probes = Probes(t0)
    samples: list[tuple[float, dict[str, int]]] = []
    backfill = asyncio.create_task(
        service.backfill(since, until, shop_ids=[BACKFILL_SHOP], streams=["orders"])
    )
    every = 1.0 if ctx.quick else 1.5
    k = 0
    # Probes stop once the backfill is 85% done, so every one of them is measured under load.
    while not backfill.done() and rows[BACKFILL_SHOP] < 0.85 * backfill_orders:
        samples.append((time.time() - t0, dict(rows)))
        probes.watchers.append(asyncio.create_task(probe(sim, rt, probes, k % 3 == 0)))
        k += 1
        await asyncio.sleep(every * (0.75 + 0.5 * rng.random()))
    while not backfill.done():
        samples.append((time.time() - t0, dict(rows)))
        await asyncio.sleep(1.0)
    backfill_s = time.time() - t0
    result = backfill.result()
    await asyncio.gather(*probes.watchers)
    samples.append((time.time() - t0, dict(rows)))
    deliveries = await sim.webhook_counts()
    stop.set()
    await supervisor.shutdown(grace_s=2.0, cancel_timeout_s=2.0)
    if runner is not None:
        await stop_http(runner)
    app = await sim.app_stats()
    return {
        "t0": t0,
        "backfill_s": backfill_s,
        "backfill_orders": backfill_orders,
        "probes": probes,
        "samples": samples,
        "app": app,
        "answers": metrics.answers,
        "processed": metrics.processed,
        "deliveries": deliveries,
        "failed": {f"{s}/{st}": m for (s, st), m in result.failed.items()},
        "client": {
            "requests": rt.stats.requests,
            "rate_limited": rt.stats.rate_limited,
            "retries": rt.stats.retries,
        },
    }


def _document(
    ctx: BenchContext, sim_spec: SimSpec, m: dict[str, Any], wall_s: float, command: str
) -> dict[str, Any]:
    probes: Probes = m["probes"]
    t0 = m["t0"]
    to_row = _stats([c["latency_s"] for c in probes.changes])
    answers = _stats([s for _, s in m["answers"]])
    engine_to_row = _stats([s for outcome, s in m["processed"] if outcome == "read"])
    statuses = Counter(str(status) for status, _ in m["answers"])
    d = m["deliveries"]
    # What Temu would count as failed: no answer within 500 ms, or an answer other than 200.
    failed_deliveries = d.get("no_answer", 0) + sum(
        v for k, v in d.items() if k.startswith("http_") and k != "http_200"
    )
    accepted = [t for t in m["app"]["accepted_at"] if t >= t0]
    rejected = m["app"]["rejected_rate_limit"] + m["app"]["rejected_storm"]
    base = m["samples"][0][1] if m["samples"] else {}
    shops = sorted({k for _, r in m["samples"] for k in r})
    t_s: list[float] = [round(t, 2) for t, _ in m["samples"]]
    rows_by_shop: dict[str, list[int]] = {
        s: [r.get(s, 0) - base.get(s, 0) for _, r in m["samples"]] for s in shops
    }
    series = {"t_s": t_s, "rows_by_shop": rows_by_shop}
    draw(
        RunPlot(
            title=f"webhooks: backfill of {m['backfill_orders']:,} orders + events for a live "
            "shop (no polling), one app",
            t0=t0,
            limit=LIMIT,
            accepted_at=accepted,
            rejected_at=[t for t in m["app"]["rejected_at"] if t >= t0],
            rows_t=t_s,
            rows=rows_by_shop,
            events={
                "change (event sent) -> rows in Postgres": [
                    (c["at_s"], c["latency_s"]) for c in probes.changes if c["latency_s"]
                ],
            },
        ),
        ctx.results / f"{NAME}.png",
    )
    backfill_rate = m["backfill_orders"] / m["backfill_s"]

    def ms(x: float | None) -> float | None:
        return None if x is None else round(x * 1000, 1)

    headline = {
        "event -> row p50 / p99 / max (s)": (
            f"{to_row['p50_s']} / {to_row['p99_s']} / {to_row['max_s']}"
        ),
        "receiver answer p50 / p99 / max (ms)": (
            f"{ms(answers['p50_s'])} / {ms(answers['p99_s'])} / {ms(answers['max_s'])}"
        ),
        "backfill orders/s meanwhile": round(backfill_rate, 1),
        "accepted req/s": round(span_rate(accepted), 3),
        "rejected": rejected,
        "probes / events answered": f"{to_row['n']} / {len(m['answers'])}",
    }
    targets = [
        target("event -> row p99 (issue: 5 s)", to_row["p99_s"], "<=", WITHIN_S, "s"),
        # "Well under" Temu's 500 ms: half of it, so a slow moment still has room.
        target("receiver answer p99 (half of 500 ms)", ms(answers["p99_s"]), "<=", 250.0, "ms"),
        target("deliveries Temu counts as failed", failed_deliveries, "==", 0),
        target("no probe lost", to_row["missed"], "==", 0),
    ]
    detail = {
        "event_to_row": to_row,
        "receiver_answer": answers,
        "engine_event_to_row_read": engine_to_row,
        "answer_statuses": dict(statuses),
        "deliveries": d,
        "changes": probes.changes,
        "backfill_s": round(m["backfill_s"], 2),
        "backfill_orders": m["backfill_orders"],
        "accepted": m["app"]["accepted"],
        "by_type": m["app"]["by_type"],
        "max_accepted_in_1s": m["app"]["max_accepted_in_1s"],
        "client": m["client"],
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
