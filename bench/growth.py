"""Growth: what a year of syncing costs in Postgres, and what it costs the planner.

1. Table and index sizes per 100,000 orders synced (~2 lines each) and per 100,000 order
   updates, written through the real diff writer (bench/diff.py's pages).
2. The reconciler planner's pass (ReconcileStore.plan_oc_pushes: 1,000 new change rows after
   its cursor, 10 % of them returns) with 1, 10 and 30 million `changes` rows generated in SQL,
   and a retention run removing one partition (1,000,000 rows) against DELETE of as many rows.

    python bench/growth.py --database-url postgresql://... --changes-millions 1,10,30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.diff import run_phase
from engine.store.migrate import migrate
from engine.store.pool import create_pool, quote_ident
from engine.store.reconcile_store import ReconcileStore
from engine.store.retention import Pruner, RetentionPolicy
from engine.store.store import Store

RESULTS = Path(__file__).resolve().parent / "results" / "growth-detail.json"
TABLES = ("orders", "order_lines", "changes", "outbox")
MIB = 1024 * 1024


async def sizes(pool: asyncpg.Pool) -> dict[str, dict[str, float]]:
    """MiB of heap (with TOAST) and of indexes per table, partitions of `changes` summed."""
    out: dict[str, dict[str, float]] = {}
    for t in TABLES:
        row = await pool.fetchrow(
            """SELECT sum(pg_table_size(r)) AS heap, sum(pg_indexes_size(r)) AS idx,
                      (SELECT count(*) FROM """
            + t
            + """) AS n
               FROM (SELECT $1::regclass AS r UNION ALL
                     SELECT relid FROM pg_partition_tree($1::regclass) WHERE isleaf
                       AND relid <> $1::regclass) AS parts""",
            t,
        )
        assert row is not None
        out[t] = {
            "rows": int(row["n"]),
            "table_mib": round(int(row["heap"] or 0) / MIB, 2),
            "index_mib": round(int(row["idx"] or 0) / MIB, 2),
        }
    return out


async def wal_since(pool: asyncpg.Pool, lsn: Any) -> float:
    n = await pool.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)", lsn)
    return round(float(n) / MIB, 2)


def minus(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {t: {k: round(a[t][k] - b[t][k], 2) for k in a[t]} for t in a}


async def growth(url: str, orders: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    schema = f"bench_growth_{uuid.uuid4().hex[:8]}"
    await migrate(conn, schema)
    pool = await create_pool(url, schema, min_size=1, max_size=2)
    try:
        store = Store(pool)
        empty = await sizes(pool)
        await run_phase(store, None, orders, 100, 0, "insert")
        await pool.execute("VACUUM ANALYZE")
        inserted = await sizes(pool)
        await run_phase(store, None, orders, 100, 1, "update")
        await pool.execute("VACUUM ANALYZE")
        updated = await sizes(pool)
    finally:
        await pool.close()
        await conn.execute(f"DROP SCHEMA {quote_ident(schema)} CASCADE")
        await conn.close()
    scale = 100_000 / orders
    per = {
        "per_100k_orders_synced": minus(inserted, empty),
        "per_100k_updates": minus(updated, inserted),
    }
    for block in per.values():
        for t in block.values():
            for k in t:
                t[k] = round(t[k] * scale, 2)
    return {"orders": orders, **per}


async def planner_at(url: str, millions: int, passes: int) -> dict[str, Any]:
    n = millions * 1_000_000
    conn = await asyncpg.connect(url)
    schema = f"bench_growth_{uuid.uuid4().hex[:8]}"
    await migrate(conn, schema)
    pool = await create_pool(url, schema, min_size=1, max_size=2)
    try:
        t0 = time.monotonic()
        # Partitions first (as the retention job keeps them), then rows a year old to now.
        await pool.execute("SELECT changes_add_partitions(1000000, $1)", millions + 1)
        await pool.execute(
            """INSERT INTO changes (shop_id, entity, entity_key, op, changed_fields, new_status,
                                    changed_at)
               SELECT 'shop-' || (g % 5), CASE WHEN g % 10 = 0 THEN 'return' ELSE 'order' END,
                      'SN-' || g, CASE WHEN g % 3 = 0 THEN 'insert' ELSE 'update' END,
                      CASE WHEN g % 3 <> 0 THEN '{updateTime}'::text[] END, g % 8,
                      now() - (($1 - g) * (365 * 86400.0 / $1)) * interval '1 second'
               FROM generate_series(1, $1) AS g""",
            n,
        )
        await pool.execute("VACUUM ANALYZE changes")
        generated_s = time.monotonic() - t0
        # What the daemon's retention job leaves behind each run (partitions ready, closed
        # partitions' BRIN summarized), with nothing old enough to remove.
        await Pruner(pool, RetentionPolicy(changes_days=0, hold_for_planner=False)).prune()
        recon = ReconcileStore(pool)
        last = int(await pool.fetchval("SELECT max(id) FROM changes"))
        times = []
        for _ in range(passes):
            await pool.execute(
                "INSERT INTO reconciler_cursor (name, position) VALUES ('oc_pushes', $1) "
                "ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
                last - 1000,
            )
            t1 = time.perf_counter()
            got = await recon.plan_oc_pushes("oc_pushes", batch=5000, overlap_s=120.0)
            times.append(time.perf_counter() - t1)
            assert got.changes_read == 100, got
        size = await pool.fetchval(
            "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('changes'::regclass)"
        )
        # Retention: the oldest partition (1,000,000 rows, all older than 90 days) dropped,
        # against deleting the next 1,000,000 rows with DELETE.
        # The cutoff falls just after the first partition's newest row (rows span a year).
        days = max(1, int(365 * (n - 1_000_000) / n) - 1)
        policy = RetentionPolicy(changes_days=days, hold_for_planner=False, max_batches=0)
        wal = "SELECT pg_current_wal_insert_lsn()"
        w0, t2 = await pool.fetchval(wal), time.perf_counter()
        report = await Pruner(pool, policy).prune()
        drop_s, drop_wal = time.perf_counter() - t2, await wal_since(pool, w0)
        # The same amount removed by DELETE, and the VACUUM it needs before the space is reused.
        first_left = int(await pool.fetchval("SELECT min(id) FROM changes"))
        w1, t3 = await pool.fetchval(wal), time.perf_counter()
        deleted = await pool.execute(
            "DELETE FROM changes WHERE id >= $1 AND id < $1 + 1000000", first_left
        )
        delete_s = time.perf_counter() - t3
        t4 = time.perf_counter()
        await pool.execute("VACUUM changes")
        vacuum_s, delete_wal = time.perf_counter() - t4, await wal_since(pool, w1)
    finally:
        await pool.close()
        await conn.execute(f"DROP SCHEMA {quote_ident(schema)} CASCADE")
        await conn.close()
    return {
        "changes_rows": n,
        "generated_s": round(generated_s, 1),
        "changes_total_mib": round(int(size) / MIB, 1),
        "planner_pass_ms": {
            "median": round(1000 * statistics.median(times), 2),
            "max": round(1000 * max(times), 2),
            "passes": passes,
        },
        "retention": {
            "partitions_dropped": len(report.dropped_partitions),
            "rows_dropped": report.removed.get("changes", 0),
            "drop_run_s": round(drop_s, 3),
            "drop_wal_mib": drop_wal,
            "delete_1m_rows_s": round(delete_s, 3),
            "vacuum_after_delete_s": round(vacuum_s, 3),
            "delete_and_vacuum_wal_mib": delete_wal,
            "delete_result": deleted,
        },
    }


async def bench(url: str, orders: int, millions: list[int], passes: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    pg_version = await conn.fetchval("SHOW server_version")
    await conn.close()
    result: dict[str, Any] = {
        "benchmark": "growth",
        "machine": {"cores": os.cpu_count(), "postgres": pg_version},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if orders:
        result["growth"] = await growth(url, orders)
        print(orjson.dumps(result["growth"]).decode(), file=sys.stderr, flush=True)
    result["planner"] = []
    for m in millions:
        r = await planner_at(url, m, passes)
        print(orjson.dumps(r).decode(), file=sys.stderr, flush=True)
        result["planner"].append(r)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    ap.add_argument("--orders", type=int, default=100_000, help="0 skips the size part")
    ap.add_argument("--changes-millions", default="1,10,30")
    ap.add_argument("--passes", type=int, default=7)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--merge", action="store_true", help="keep other sizes already in --out")
    args = ap.parse_args()
    millions = [int(x) for x in args.changes_millions.split(",") if x.strip()]
    doc = asyncio.run(bench(args.database_url, args.orders, millions, args.passes))
    if args.merge and args.out.exists():
        old = orjson.loads(args.out.read_bytes())
        have = {r["changes_rows"] for r in doc["planner"]}
        doc["planner"] = sorted(
            [r for r in old.get("planner", []) if r["changes_rows"] not in have] + doc["planner"],
            key=lambda r: r["changes_rows"],
        )
        doc.setdefault("growth", old.get("growth"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
