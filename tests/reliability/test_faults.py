"""Faults from the simulator, one kind at a time and all mixed: HTTP 502, 4000000, 4000004
storms, truncated JSON, dropped connections and latency spikes beyond the request timeout.

The CLI runs as a subprocess (backfill, then an incremental `run --once` over fresh changes,
and in the mixed case the reconciler with answers lost after an upload was applied). Each
converges to the simulator's truth with no duplicate, and its `--json` summary counts the
retries (and the rate-limit answers for storms). The faults injected are read from the
simulator's own counters, so a test that injected nothing cannot pass.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from engine.sim.config import ALL_FAULT_KINDS, SimConfig
from engine.sim.server import Simulator
from engine.store.pool import quote_ident
from tests.fixtures_proc import run_cli
from tests.fixtures_sim import SimFactory
from tests.reliability.harness import (
    LONG,
    at_most_once,
    duplicate_inserts,
    record_figures,
    scaled,
    sim_toml,
)
from tests.truth import truth_differences

TIMEOUT_S = 0.5  # apps.timeout_s: a "slow" answer (SLOW_S) must outlast it
SLOW_S = 1.5
# Per kind: how often it strikes. A storm refuses every request of the app for a second, and
# a slow answer costs a whole timeout, so those two are rarer.
RATES = {
    "http502": 0.15,
    "sys4000000": 0.15,
    "truncated": 0.15,
    "drop": 0.15,
    "slow": 0.04,
    "ratelimit_storm": 0.02,
}
KINDS = [*ALL_FAULT_KINDS, "mixed"]


def _since(config: SimConfig) -> str:
    start, _ = config.time_range()
    return datetime.fromtimestamp(start, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Long mode repeats every case with other seeds: other records, other fault moments.
SEEDS = [21, 22, 23, 24, 25] if LONG else [21]


async def _lost_answers_settle(
    sim: Simulator, conn: asyncpg.Connection, schema: str, tmp_path: Path, conf: list[str]
) -> None:
    """Uploads applied whose answer was lost: once their re-read is due, a reconciler pass
    finds the label at Temu and books each task done, without uploading again (at_most_once
    is checked by the caller over every attempt)."""
    lost = [a for a in sim.upload_attempts() if a["answerLost"]]
    assert lost, "no applied upload lost its answer: the case proves nothing"
    keys = [f"upload_label:{a['shopId']}:{a['parentAfterSalesSn']}" for a in lost]
    # Such a task waits (UPLOAD_COVER_S) before it re-reads; making it due now stands in for
    # that wait. No more faults: what is checked is the re-read, not another lost answer.
    box = quote_ident(schema)
    await conn.execute(
        f"UPDATE {box}.outbox SET next_attempt_at = now(), lease_expires_at = now() "
        "WHERE dedupe_key = ANY($1) AND state IN ('pending', 'running')",
        keys,
    )
    sim.set_faults(0.0, after_apply_rate=0.0)
    settle = await run_cli(tmp_path, "settle", [*conf, "reconcile", "--once", "--json"])
    settle.assert_ok()
    states = await conn.fetch(
        f"SELECT dedupe_key, state FROM {box}.outbox WHERE dedupe_key = ANY($1)", keys
    )
    assert {r["dedupe_key"]: r["state"] for r in states} == dict.fromkeys(keys, "done")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
async def test_sync_converges_under_faults(
    kind: str, seed: int, sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    kinds = tuple(ALL_FAULT_KINDS) if kind == "mixed" else (kind,)
    rate = 0.15 if kind == "mixed" else RATES[kind]
    config = SimConfig.default(
        # Mixed needs enough requests for every kind to strike; one kind needs fewer.
        orders=scaled(300 if kind == "mixed" else 150, 1500),
        returns=scaled(60 if kind == "mixed" else 30, 200),
        shops=2,
        qps=400,
        seed=seed,
        fault_rate=rate,
        fault_kinds=kinds,
        slow_s=SLOW_S,
        fault_after_apply_rate=0.3 if kind == "mixed" else 0.0,
        oc_label_ready_after=0,
    )
    sim = await sim_factory(config)
    sim.world.clock = lambda: time.time() - 5  # changes fall inside the next pass's window
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        sim_toml(
            sim,
            config,
            db_url=pg_url,
            schema=schema,
            app_extra=f"timeout_s = {TIMEOUT_S}\nmax_attempts = 30\n",
            extra="[reconciler]\nenabled = false\n"
            if kind != "mixed"
            else "[reconciler]\nmax_attempts = 50\n",
        )
    )
    conf = ["--config", str(cfg)]

    backfill = await run_cli(
        tmp_path, "backfill", [*conf, "backfill", "--since", _since(config), "--json"], within=240
    )
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    summaries = [backfill.summary()]

    for shop in config.shops:
        sim.mutate(shop.shop_id, orders_changed=20, orders_new=20, returns_changed=5, returns_new=5)
    once = await run_cli(tmp_path, "once", [*conf, "run", "--once", "--json"], within=240)
    assert once.returncode == 0, once.stderr[-3000:]
    summaries.append(once.summary())
    if kind == "mixed":
        # A second pass: tasks whose retries were pushed back by the first are due again.
        again = await run_cli(
            tmp_path, "again", [*conf, "reconcile", "--once", "--json"], within=240
        )
        assert again.returncode == 0, again.stderr[-3000:]
        summaries.append(again.summary())
        # Uploads change returns at Temu after the sync read them; the next pass brings them
        # in. Settled once a pass's reconciler changed nothing after its sync.
        # (An upload whose answer was lost is not counted, hence the simulator's own count.)
        for i in range(5):
            uploads = len(sim.uploads())
            last = await run_cli(
                tmp_path, f"last{i}", [*conf, "run", "--once", "--json"], within=240
            )
            assert last.returncode == 0, last.stderr[-3000:]
            summaries.append(last.summary())
            if len(sim.uploads()) == uploads:
                break

    conn = await asyncpg.connect(pg_url)
    try:
        problems = await truth_differences(conn, schema, sim)
        problems += await duplicate_inserts(conn, schema)
        if kind == "mixed":
            await _lost_answers_settle(sim, conn, schema, tmp_path, conf)
    finally:
        await conn.close()
    problems += at_most_once(sim)
    assert not problems, problems

    stats = sim.stats(arrivals=False)
    injected = stats["faults"]
    if kind == "mixed":
        # ~30 faults spread at random over six kinds: one kind can miss a run by chance (each
        # kind is proven on its own in the single-kind cases), so ask for a real mix instead.
        hit = [k for k in kinds if injected.get(k, 0) > 0]
        assert sum(injected.get(k, 0) for k in kinds) >= 10, injected
        assert len(hit) >= 4, f"too few fault kinds injected: {injected}"
    else:
        assert injected.get(kind, 0) > 0, f"no {kind} fault was injected: {injected}"
    retries = sum(s["retries"] for s in summaries)
    rate_limited = sum(s["rate_limited"] for s in summaries)
    assert retries > 0, summaries
    if "ratelimit_storm" in kinds:
        assert rate_limited > 0, summaries
        storm_refusals = sum(a["rejected_storm"] for a in stats["apps"].values())
        # Every refusal the simulator sent was seen and counted by the engine.
        assert rate_limited >= storm_refusals, (summaries, stats["apps"])
    if kind == "mixed":
        assert sum(s["labels_uploaded"] for s in summaries) > 0, summaries
    record_figures(
        f"faults_{kind}_{seed}",
        {
            "injected": injected,
            "after_apply": stats["faults_after_apply"],
            "retries": retries,
            "rate_limited": rate_limited,
            "requests": sum(s["requests"] for s in summaries),
            "uploads": len(sim.uploads()),
            "oc_pushes": len(sim.oc_pushes()),
        },
    )
