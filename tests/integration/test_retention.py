"""Retention: prune removes exactly what [retention] says, nothing the reconciler still needs,
and a prune running beside a backfill and reconciler passes changes neither's result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from engine.app.reconciler import reconcile_once
from engine.app.runtime import Runtime, open_runtime
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from engine.store.reconcile_store import ReconcileStore
from engine.store.retention import Pruner, RetentionPolicy
from tests.integration.test_reconcile_flow import QPS, SHOP, SimFactory, make_settings
from tests.integration.test_reconcile_oc import expected_pushes, pushes_by_kind

NOW = time.time()
DAY = 86_400.0


def ago(days: float) -> datetime:
    return datetime.fromtimestamp(NOW - days * DAY, UTC)


def policy(**kw: object) -> RetentionPolicy:
    base: dict[str, object] = {"batch_rows": 7, "hold_for_planner": False}
    return RetentionPolicy(**{**base, **kw})  # type: ignore[arg-type]


async def add_changes(pool: asyncpg.Pool, n: int, days_old: float, entity: str = "order") -> None:
    await pool.execute(
        """INSERT INTO changes (shop_id, entity, entity_key, op, changed_at)
           SELECT 's', $3, 'k' || g, 'insert', $2 FROM generate_series(1, $1) AS g""",
        n,
        ago(days_old),
        entity,
    )


async def ages(pool: asyncpg.Pool) -> list[int]:
    rows = await pool.fetch(
        "SELECT round(extract(epoch FROM ($1 - changed_at)) / 86400)::int AS d FROM changes "
        "ORDER BY id",
        datetime.fromtimestamp(NOW, UTC),
    )
    return [r["d"] for r in rows]


async def add_task(
    pool: asyncpg.Pool, key: str, kind: str, state: str, days_old: float, sn: str | None = None
) -> None:
    await pool.execute(
        """INSERT INTO outbox (kind, dedupe_key, shop_id, state, payload, updated_at)
           VALUES ($1, $2, 's', $3, jsonb_build_object('shop_id', 's', 'sn', $4::text), $5)""",
        kind,
        key,
        state,
        sn,
        ago(days_old),
    )


async def add_return(pool: asyncpg.Pool, sn: str, status: int, ops: list[int], days: float) -> None:
    await pool.execute(
        """INSERT INTO returns (shop_id, parent_after_sales_sn, status, available_operations,
                               payload, synced_at)
           VALUES ('s', $1, $2, $3, '{}', $4)""",
        sn,
        status,
        ops,
        ago(days),
    )


async def keys(pool: asyncpg.Pool) -> set[str]:
    return {r["dedupe_key"] for r in await pool.fetch("SELECT dedupe_key FROM outbox")}


async def test_prune_removes_exactly_what_the_settings_say(pool: asyncpg.Pool) -> None:
    # The first partition fills with old rows, then ids move on into the next one.
    await add_changes(pool, 30, 100)
    await pool.execute("SELECT setval('changes_id_seq', 1000000)")
    await add_changes(pool, 10, 95)
    await add_changes(pool, 20, 80)
    await add_changes(pool, 10, 0)

    await add_return(pool, "R-gone", 5, [], 40)  # closed long ago
    await add_return(pool, "R-waits", 8, [10], 40)  # still waits for a label at Temu
    await add_return(pool, "R-moved", 6, [], 1)  # changed yesterday: the planner may look again
    await add_task(pool, "old-done", "oc_cancel", "done", 31, "R-gone")
    await add_task(pool, "old-done-upload", "upload_label", "done", 31, "R-gone")
    await add_task(pool, "old-done-no-return", "oc_tracking", "done", 31, "R-unknown")
    await add_task(pool, "old-done-waiting", "upload_label", "done", 31, "R-waits")
    await add_task(pool, "old-done-recent-change", "oc_cancel", "done", 31, "R-moved")
    await add_task(pool, "young-done", "oc_cancel", "done", 29, "R-gone")
    await add_task(pool, "old-dead", "oc_cancel", "dead", 400, "R-gone")
    await add_task(pool, "old-pending", "oc_cancel", "pending", 400, "R-gone")

    # The tables the hostile-data and webhook features add (migrations 0009 and 0007).
    await pool.execute(
        "INSERT INTO rejected_records (shop_id, stream, record_hash, reason, raw, last_seen_at)"
        " VALUES ('a', 'orders', 'h1', 'r', '{}', $1), ('b', 'orders', 'h2', 'r', '{}', $2),"
        " ('c', 'orders', 'h3', 'r', '{}', $3)",
        ago(91),
        ago(91),
        ago(89),
    )
    await pool.execute(
        "INSERT INTO webhook_events (id, event_key, app_key, shop_id, code, payload,"
        " received_at, processed_at) VALUES"
        " (1, 'k1', 'a', 's', 'c', '{}', $1, $1), (2, 'k2', 'a', 's', 'c', '{}', $1, NULL),"
        " (3, 'k3', 'a', 's', 'c', '{}', $2, $2)",
        ago(8),
        ago(6),
    )
    # Reverse logistics Temu never gave (migration 0010): asked for again for 30 days only.
    await pool.execute(
        "INSERT INTO logistics_pending (shop_id, parent_after_sales_sn, first_seen_at) VALUES"
        " ('s', 'R-old', $1), ('s', 'R-young', $2)",
        ago(31),
        ago(29),
    )

    pruner = Pruner(pool, policy(), clock=lambda: NOW)
    dry = await pruner.prune(dry_run=True)
    # No "outbox_dead": by default dead tasks wait for an operator.
    assert dry.removed == {
        "changes": 40,
        "outbox_done": 3,
        "rejected_records": 2,
        "webhook_events": 1,
        "logistics_pending": 1,
    }
    assert await pool.fetchval("SELECT count(*) FROM changes") == 70, "dry run deletes nothing"

    report = await pruner.prune()
    assert report.removed == dry.removed
    assert report.dropped_partitions == ["changes_p0000000000000000001"]
    assert await ages(pool) == [80] * 20 + [0] * 10
    assert await keys(pool) == {
        "old-done-waiting",
        "old-done-recent-change",
        "young-done",
        "old-dead",
        "old-pending",
    }
    assert await pool.fetchval("SELECT count(*) FROM rejected_records") == 1
    assert await pool.fetchval("SELECT parent_after_sales_sn FROM logistics_pending") == "R-young"
    assert [r["id"] for r in await pool.fetch("SELECT id FROM webhook_events ORDER BY id")] == [
        2,
        3,
    ]
    # Nothing left to do: a second run removes nothing.
    assert (await pruner.prune()).total == 0

    # Dead tasks go too once a number of days is set; 0 days keeps a table's rows for ever.
    report = await Pruner(
        pool, policy(outbox_dead_days=365, changes_days=0), clock=lambda: NOW
    ).prune()
    assert report.removed["outbox_dead"] == 1 and "changes" not in report.removed


async def test_partitions_are_created_ahead_of_the_ids(pool: asyncpg.Pool) -> None:
    await pool.execute("SELECT setval('changes_id_seq', 1900000)")
    report = await Pruner(pool, policy(changes_partition_rows=500_000), clock=lambda: NOW).prune()
    # Two partitions' worth of ids stay ready past the next id (1,900,001).
    assert report.created_partitions == [
        "changes_p0000000000002000001",
        "changes_p0000000000002500001",
    ]
    # Past every range partition (a backfill outrunning the job), rows still land, in the
    # default partition; retention deletes them there, and new partitions start above them.
    await pool.execute("SELECT setval('changes_id_seq', 9000000)")
    await add_changes(pool, 3, 100)
    await add_changes(pool, 2, 0)
    assert await pool.fetchval("SELECT count(*) FROM changes_default") == 5
    report = await Pruner(pool, policy(), clock=lambda: NOW).prune()
    assert report.removed["changes"] == 3
    assert report.created_partitions[0] == "changes_p0000000000009000006"
    await add_changes(pool, 1, 0)
    assert await pool.fetchval("SELECT count(*) FROM changes_p0000000000009000006") == 1
    assert await ages(pool) == [0, 0, 0]


async def test_closed_partitions_are_summarized_for_the_planners_look_back(
    pool: asyncpg.Pool,
) -> None:
    # An unsummarized BRIN range is read by every "changed in the last minutes" query.
    # Pages past the first block range are left unsummarized by inserts (and VACUUM leaves
    # the last, partial one so).
    await add_changes(pool, 30_000, 1)
    await pool.execute("SELECT setval('changes_id_seq', 1000000)")
    index = "'changes_p0000000000000000001_changed_at_idx'::regclass"
    await Pruner(pool, policy(changes_days=0), clock=lambda: NOW).prune()
    assert await pool.fetchval(f"SELECT brin_summarize_new_values({index})") == 0


async def test_changes_the_planner_has_not_read_are_kept(pool: asyncpg.Pool) -> None:
    await add_changes(pool, 12, 100, entity="return")
    pruner = Pruner(pool, policy(hold_for_planner=True), clock=lambda: NOW)
    # No cursor yet: the planner has read nothing, so nothing goes.
    assert (await pruner.prune()).removed["changes"] == 0
    first = await pool.fetchval("SELECT min(id) FROM changes")
    await pool.execute(
        "INSERT INTO reconciler_cursor (name, position) VALUES ('oc_pushes', $1)", first + 4
    )
    assert (await pruner.prune()).removed["changes"] == 5
    # The planner goes on from its cursor over what is left, none of it missed.
    got = await ReconcileStore(pool).plan_oc_pushes("oc_pushes", batch=100, overlap_s=120)
    assert got.changes_read == 7


async def test_a_busy_changes_table_never_makes_the_sync_wait_long(pool: asyncpg.Pool) -> None:
    await add_changes(pool, 5, 100)
    await pool.execute("SELECT setval('changes_id_seq', 1000000)")
    await add_changes(pool, 1, 0)
    pruner = Pruner(pool, policy(lock_timeout_s=0.2), clock=lambda: NOW)
    async with pool.acquire() as reader, reader.transaction():
        # A long read (a report, a pg_dump) holds `changes`: partition DDL gives up quickly.
        await reader.fetchval("SELECT count(*) FROM changes")
        t0 = time.monotonic()
        report = await pruner.prune()
        assert time.monotonic() - t0 < 2.0
        assert report.busy == ["changes layout", "changes_p0000000000000000001"]
        assert report.removed["changes"] == 5, "the rows still go, by plain deletes"
    report = await pruner.prune()
    assert report.busy == [] and report.dropped_partitions == ["changes_p0000000000000000001"]
    assert await ages(pool) == [0]


async def test_two_daemons_never_prune_at_once(pool: asyncpg.Pool) -> None:
    await add_changes(pool, 20, 100)
    pruners = [Pruner(pool, policy(batch_rows=1), clock=lambda: NOW) for _ in range(2)]
    reports = await asyncio.gather(*(p.prune() for p in pruners))
    assert sum(r.removed.get("changes", 0) for r in reports) == 20
    assert [r.busy for r in reports].count(["another prune is running"]) == 1


# -- beside a backfill and reconciler passes ------------------------------------------------------


@pytest.fixture
async def world(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> AsyncIterator[tuple[Simulator, Runtime]]:
    config = SimConfig.default(orders=600, returns=150, shops=1, qps=QPS, seed=11)
    sim = await sim_factory(config)
    rt = await open_runtime(make_settings(sim, config, pg_url, schema))
    try:
        yield sim, rt
    finally:
        await rt.close()


async def test_prune_beside_backfill_and_reconciler_changes_neither_result(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    want_cancels, want_updates, _ = expected_pushes(sim)
    # Everything counts as old (a clock years ahead), so prune takes all it is allowed to.
    pruner = Pruner(
        rt.pool,
        policy(changes_days=1, outbox_done_days=1, batch_rows=50, hold_for_planner=True),
        clock=lambda: time.time() + 1000 * DAY,
    )
    stop = asyncio.Event()
    runs = 0

    async def prune_all_along() -> None:
        nonlocal runs
        while not stop.is_set():
            await pruner.prune()
            runs += 1
            await asyncio.sleep(0.01)

    pruning = asyncio.create_task(prune_all_along())
    try:
        await rt.sync_service().backfill(datetime(2020, 1, 1, tzinfo=UTC), None)
        for _ in range(4):
            await reconcile_once(rt)
    finally:
        stop.set()
        await pruning
    assert runs >= 3

    # The backfill stored every record Temu has; every push happened, each exactly once.
    assert await rt.pool.fetchval("SELECT count(*) FROM orders") == len(sim.truth_orders(SHOP))
    assert await rt.pool.fetchval("SELECT count(*) FROM returns") == len(sim.truth_returns(SHOP))
    cancels, updates = pushes_by_kind(sim)
    assert set(cancels) == want_cancels and set(cancels.values()) == {1}
    assert want_updates <= set(updates) and set(updates.values()) == {1}
    # And the planner's unread rows were all still there for it: its cursor reached the end.
    last = await rt.pool.fetchval("SELECT max(id) FROM changes")
    cursor = await rt.pool.fetchval("SELECT position FROM reconciler_cursor")
    assert last is None or cursor >= last


async def test_retention_settings_are_read_and_checked() -> None:
    from engine.config import ConfigError, parse_config

    s = parse_config({"retention": {"changes_days": 30, "outbox_dead_days": 60}}, "c.toml", {})
    assert s.retention.changes_days == 30 and s.retention.outbox_dead_days == 60
    assert s.retention.outbox_done_days == 30 and s.retention.webhook_events_days == 7
    with pytest.raises(ConfigError, match=r"retention\.changes_days: must be >= 0"):
        parse_config({"retention": {"changes_days": -1}}, "c.toml", {})
    with pytest.raises(ConfigError, match=r"retention\.keep: unknown key"):
        parse_config({"retention": {"keep": 1}}, "c.toml", {})
