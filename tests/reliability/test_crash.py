"""SIGKILL at random moments during a backfill, an incremental pass (`run --once`) and a
reconciler pass (`reconcile --once`), each run as the CLI subprocess against the simulator over
HTTP and a real Postgres. After a restart Postgres equals the simulator's truth, no record was
inserted twice, no label was uploaded twice and no Orange Connex push was applied twice.

A kill moment is drawn (seeded) as a number of requests the simulator must have accepted
from this run; 0 means "during start-up" (imports, pool, migrations), at a random delay. So
kills land uniformly over the work, including the instant an upload has been applied but its
answer not yet read.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from engine.app.runtime import open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from engine.store.pool import quote_ident
from tests.fixtures_db import new_schema_name
from tests.fixtures_proc import EngineProcess, run_cli
from tests.fixtures_sim import SimFactory
from tests.reliability.harness import (
    at_most_once,
    drop_schema,
    duplicate_inserts,
    record_figures,
    scaled,
    sim_toml,
)
from tests.truth import truth_differences

SEED = int(os.environ.get("TEMU_SYNC_CRASH_SEED", "8"))
TRIALS = scaled(10, 40)
QPS = 400  # high: trials stay short; pacing is not what is under test here
STARTUP_S = 0.6  # about how long the CLI takes before its first request
LAG_S = 1  # sync.safety_lag_s of the incremental trials


def accepted(sim: Simulator) -> int:
    """Requests the simulator took so far: Temu calls it accepted plus Orange Connex calls."""
    stats = sim.stats(arrivals=False)
    return sum(a["accepted"] for a in stats["apps"].values()) + sum(
        stats["oc"]["requests"].values()
    )


class Killer:
    """Starts runs and SIGKILLs each at a random moment: after a seeded number of requests in
    [0, work], where ``work`` is what the last uninterrupted run needed (0: during start-up)."""

    def __init__(self, sim: Simulator, rng: random.Random, work: int) -> None:
        self.sim = sim
        self.rng = rng
        self.work = work
        self.kills = 0

    async def run(self, cli: EngineProcess) -> bool:
        """True if the kill landed; False if the run finished first."""
        threshold = self.rng.randint(0, max(1, self.work))
        base = accepted(self.sim)
        await cli.start()
        delay = self.rng.uniform(0.05, STARTUP_S) if threshold == 0 else 60.0
        deadline = time.monotonic() + delay
        while cli.returncode is None:
            if time.monotonic() >= deadline or (
                threshold and accepted(self.sim) - base >= threshold
            ):
                await cli.kill()
                landed = cli.returncode == -signal.SIGKILL
                self.kills += landed
                return landed
            await asyncio.sleep(0.002)
        assert cli.returncode == 0, cli.stderr[-3000:]
        self.work = max(1, accepted(self.sim) - base)  # the work is smaller than thought
        return False


async def check_truth(pg_url: str, schema: str, sim: Simulator, trial: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        problems = await truth_differences(conn, schema, sim)
        problems += await duplicate_inserts(conn, schema)
    finally:
        await conn.close()
    problems += at_most_once(sim)
    assert not problems, f"{trial}: {problems}"


def _since(config: SimConfig) -> str:
    start, _ = config.time_range()
    return datetime.fromtimestamp(start, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_sigkill_during_backfill(
    sim_factory: SimFactory, pg_url: str, tmp_path: Path
) -> None:
    config = SimConfig.default(
        orders=scaled(120, 1500), returns=scaled(25, 200), shops=2, qps=QPS, seed=SEED
    )
    sim = await sim_factory(config)
    rng = random.Random(SEED)

    def args(schema: str) -> list[str]:
        cfg = tmp_path / f"{schema}.toml"
        cfg.write_text(
            sim_toml(
                sim, config, db_url=pg_url, schema=schema, extra="[reconciler]\nenabled = false\n"
            )
        )
        return ["--config", str(cfg), "backfill", "--since", _since(config), "--json"]

    # A clean run tells how many requests a backfill takes: the range the kills are drawn in.
    schema = new_schema_name()
    before = accepted(sim)
    try:
        clean = await run_cli(tmp_path, "clean", args(schema))
        assert clean.returncode == 0, clean.stderr[-3000:]
        await check_truth(pg_url, schema, sim, "clean backfill")
    finally:
        await drop_schema(pg_url, schema)
    killer = Killer(sim, rng, accepted(sim) - before)
    for trial in range(TRIALS):
        schema = new_schema_name()
        try:
            a = args(schema)
            await killer.run(EngineProcess(tmp_path, f"t{trial}", a))
            rerun = await run_cli(tmp_path, f"t{trial}-rerun", a)
            assert rerun.returncode == 0, rerun.stderr[-3000:]
            await check_truth(pg_url, schema, sim, f"backfill trial {trial}")
        finally:
            await drop_schema(pg_url, schema)
    # A kill that came after the run finished proves nothing: most must have landed.
    assert killer.kills >= TRIALS * 0.7, f"only {killer.kills} of {TRIALS} kills landed"
    record_figures("crash_backfill", {"trials": TRIALS, "kills": killer.kills})


async def _sync_in_process(
    sim: Simulator, config: SimConfig, pg_url: str, schema: str, **sync: Any
) -> None:
    settings = settings_for_simulator(sim, config, database_url=pg_url, schema=schema, sync=sync)
    rt = await open_runtime(settings)
    try:
        await rt.sync_service().incremental_pass()
        assert not rt.counters.shops_failed
    finally:
        await rt.close()


async def _cursor_end(pg_url: str, schema: str) -> int:
    """The latest second any incremental cursor covers."""
    conn = await asyncpg.connect(pg_url)
    try:
        end = await conn.fetchval(
            f"SELECT max(position) FROM {quote_ident(schema)}.sync_state WHERE kind = 'incremental'"
        )
    finally:
        await conn.close()
    assert end is not None
    return int(end.timestamp())


async def test_sigkill_during_incremental_pass(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    """Runs with no overlap (each pass starts one second after its cursor), and every round
    of changes is stamped over the seconds just after the last cursor, the first of them
    included: a pass that skipped any of its window, or committed a cursor beyond what it
    stored, leaves those changes out for good and the truth check fails."""
    config = SimConfig.default(
        orders=scaled(120, 1000), returns=scaled(25, 150), shops=2, qps=QPS, seed=SEED + 1
    )
    sim = await sim_factory(config)
    rng = random.Random(SEED + 1)
    cfg = tmp_path / "config.toml"
    sync = f'[sync]\nstart = "{_since(config)}"\nsafety_lag_s = {LAG_S}\noverlap_s = 0\n'
    cfg.write_text(
        sim_toml(
            sim,
            config,
            db_url=pg_url,
            schema=schema,
            extra=sync + "[reconciler]\nenabled = false\n",
        )
    )
    args = ["--config", str(cfg), "run", "--once", "--json"]
    await _sync_in_process(sim, config, pg_url, schema, overlap_s=0, safety_lag_s=LAG_S)

    n = scaled(10, 40)

    async def change() -> None:
        # Seconds after every cursor that the next pass's window (ending LAG_S behind its
        # start) is sure to reach: wait (bounded) until there is at least one.
        first = await _cursor_end(pg_url, schema) + 1
        deadline = time.monotonic() + 10
        while int(time.time()) - LAG_S < first:
            assert time.monotonic() < deadline, "the clock does not move"
            await asyncio.sleep(0.05)
        seconds = list(range(first, int(time.time()) - LAG_S + 1))
        try:
            for i in range(n):
                # Each change alone, on the next stamp in turn: the cursor's next second
                # first, the newest last.
                stamp = seconds[min(i * len(seconds) // n, len(seconds) - 1)]
                if i == n - 1:
                    stamp = seconds[-1]
                sim.world.clock = lambda stamp=stamp: float(stamp)
                for shop in config.shops:
                    k = 1 if i % 3 == 0 else 0
                    sim.mutate(
                        shop.shop_id,
                        orders_changed=1,
                        orders_new=1,
                        returns_changed=k,
                        returns_new=k,
                    )
        finally:
            sim.world.clock = time.time

    # A clean pass over one round of changes tells how many requests the kills range over.
    await change()
    before = accepted(sim)
    clean = await run_cli(tmp_path, "clean", args)
    assert clean.returncode == 0, clean.stderr[-3000:]
    await check_truth(pg_url, schema, sim, "clean incremental pass")
    killer = Killer(sim, rng, accepted(sim) - before)
    for trial in range(TRIALS):
        await change()
        await killer.run(EngineProcess(tmp_path, f"t{trial}", args))
        rerun = await run_cli(tmp_path, f"t{trial}-rerun", args)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        await check_truth(pg_url, schema, sim, f"incremental trial {trial}")
    assert killer.kills >= TRIALS * 0.7, f"only {killer.kills} of {TRIALS} kills landed"
    record_figures("crash_incremental", {"trials": TRIALS, "kills": killer.kills})


def _awaiting(sim: Simulator, shop: str) -> set[str]:
    return {
        r["parentAfterSalesSn"]
        for r in sim.truth_returns(shop)
        if r["parentAfterSalesStatus"] == 8 and 10 in r["availableOperateList"]
    }


def _open_rma_refs(sim: Simulator) -> set[str]:
    return {r["referenceNumber"] for r in sim.rmas() if r["status"] == "OPEN"}


async def _outbox(pg_url: str, schema: str) -> dict[str, int]:
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            f"SELECT state, count(*) AS n FROM {quote_ident(schema)}.outbox GROUP BY state"
        )
    finally:
        await conn.close()
    return {r["state"]: r["n"] for r in rows}


async def test_sigkill_during_reconciler_pass(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    """Kills land among label uploads (prepare, upload, read back) and OC pushes. A task killed
    while leased waits out its lease (5 s, the minimum) before another run may take it, so
    completeness is checked once at the end; at-most-once after every trial."""
    config = SimConfig.default(
        orders=200,
        returns=scaled(150, 500),
        shops=2,
        qps=QPS,
        seed=SEED + 2,
        oc_label_ready_after=0,
    )
    sim = await sim_factory(config)
    sim.world.clock = lambda: time.time() - 5
    rng = random.Random(SEED + 2)
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        sim_toml(
            sim,
            config,
            db_url=pg_url,
            schema=schema,
            extra="[reconciler]\nlease_s = 5\nmax_attempts = 50\n",
            app_extra="timeout_s = 4",  # a lease must outlast one Temu call
        )
    )
    args = ["--config", str(cfg), "reconcile", "--once", "--json"]
    await _sync_in_process(sim, config, pg_url, schema)

    # Fresh work before every trial: returns put into "label pending" with an OC RMA (label
    # uploads), and returns with an open RMA cancelled by the buyer (OC cancels).
    with_rma = {r["referenceNumber"] for r in sim.rmas()}
    candidates = {
        s.shop_id: [
            r["parentAfterSalesSn"]
            for r in sim.truth_returns(s.shop_id)
            if r["afterSalesType"] == 2
            and r["parentAfterSalesStatus"] not in (6, 7, 8)
            and r["parentAfterSalesSn"] not in with_rma
        ]
        for s in config.shops
    }
    assert all(len(c) >= (TRIALS + 1) * 4 for c in candidates.values()), "too few returns"
    for c in candidates.values():
        rng.shuffle(c)
    per_trial = 3

    async def make_work() -> None:
        for shop in config.shops:
            for sn in candidates[shop.shop_id][:per_trial]:
                sim.set_return_status(shop.shop_id, sn, 8, [10])
                if sn not in _open_rma_refs(sim):
                    sim.open_rma(shop.shop_id, sn)
            for sn in candidates[shop.shop_id][per_trial : per_trial + 1]:
                if sn not in _open_rma_refs(sim):
                    sim.open_rma(shop.shop_id, sn)
                sim.set_return_status(shop.shop_id, sn, 6)
            del candidates[shop.shop_id][: per_trial + 1]
        await _sync_in_process(sim, config, pg_url, schema)

    # The seed's own backlog first, then a clean pass over one round of work tells how many
    # requests the kills range over.
    backlog = await run_cli(tmp_path, "backlog", args)
    assert backlog.returncode == 0, backlog.stderr[-3000:]
    await make_work()
    before = accepted(sim)
    clean = await run_cli(tmp_path, "clean", args)
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert clean.summary()["labels_uploaded"] > 0, clean.stdout
    killer = Killer(sim, rng, accepted(sim) - before)
    for trial in range(TRIALS):
        await make_work()
        await killer.run(EngineProcess(tmp_path, f"t{trial}", args))
        # The next trial's run is this one's restart (it also finds the new work).
        problems = at_most_once(sim)
        assert not problems, f"reconcile trial {trial}: {problems}"
    assert killer.kills >= TRIALS * 0.7, f"only {killer.kills} of {TRIALS} kills landed"

    # Tasks of killed runs stay leased: lease_s, or UPLOAD_COVER_S (120 s) once an upload was
    # marked attempted. Ending those leases now stands in for waiting them out; the claim
    # query then treats the tasks exactly as it would two minutes later.
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            f"UPDATE {quote_ident(schema)}.outbox SET lease_expires_at = now() "
            "WHERE state = 'running'"
        )
    finally:
        await conn.close()
    for final in range(5):
        done = await run_cli(tmp_path, f"final{final}", args)
        assert done.returncode == 0, done.stderr[-3000:]
        box = await _outbox(pg_url, schema)
        if not box.get("pending") and not box.get("running"):
            break
    assert box.get("dead", 0) == 0, box
    waiting = set().union(*(_awaiting(sim, s.shop_id) for s in config.shops))
    uploaded = {u["parentAfterSalesSn"] for u in sim.uploads()}
    refs = _open_rma_refs(sim)
    if waiting & refs:
        conn = await asyncpg.connect(pg_url)
        try:
            rows = await conn.fetch(
                f"SELECT dedupe_key, state, attempts, last_error, payload::text FROM "
                f"{quote_ident(schema)}.outbox WHERE dedupe_key LIKE ANY($1)",
                [f"%{sn}%" for sn in waiting & refs],
            )
        finally:
            await conn.close()
        raise AssertionError(
            f"returns with an open RMA still waiting: {sorted(waiting & refs)}"
            f"; tasks: {[dict(r) for r in rows]}; "
            f"rmas: {[r for r in sim.rmas() if r['referenceNumber'] in waiting]}"
        )
    assert uploaded, "no label was uploaded at all"
    cancelled = {p["referenceNumber"] for p in sim.oc_pushes() if p["operation"] == "CANCEL"}
    assert cancelled, "no OC cancel was pushed at all"
    # Every return cancelled or denied at Temu has its RMA cancelled at OC: none left open.
    ended = {
        r["parentAfterSalesSn"]
        for s in config.shops
        for r in sim.truth_returns(s.shop_id)
        if r["parentAfterSalesStatus"] in (6, 7)
    }
    assert ended & cancelled, "no cancel among the trials' work"
    assert sorted(ended & _open_rma_refs(sim)) == [], "RMAs still open for ended returns"
    problems = at_most_once(sim)
    assert not problems, problems
    record_figures(
        "crash_reconcile",
        {
            "trials": TRIALS,
            "kills": killer.kills,
            "uploads": len(uploaded),
            "oc_pushes": len(sim.oc_pushes()),
        },
    )
