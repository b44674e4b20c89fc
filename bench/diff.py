"""Diff-writer throughput: Store.write_orders for inserts, all-changed updates and no-ops.

    python bench/diff.py [--database-url URL] [--orders 200000] [--batch-sizes 100,1000]

Each batch size runs in a fresh schema: insert every order, rewrite them unchanged (no-op),
rewrite them all changed (update), then no-op again on the grown tables. Page items are
generated deterministically outside the timed section; only the awaited write is timed.
Rates are page items (orders) per second; lines/s and rows/s (orders + lines) are reported
too. The insert and update phases interleave each page with a reference on the same rows
(bench/diff_reference.py: binary COPY; COPY into a temp table + UPDATE ... FROM), and
``vs_copy`` gives the writer's rows/s over the reference's (no-op: over the COPY reference).
Results go to bench/results/diff.json and stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.diff_reference import Reference
from engine.store.embedded import EmbeddedPostgres
from engine.store.migrate import migrate
from engine.store.pool import connect, create_pool, quote_ident
from engine.store.store import CursorAdvance, Store

RESULTS = Path(__file__).resolve().parent / "results" / "diff.json"
BASE_TS = 1735689600  # 2025-01-01


def page_item(i: int, version: int) -> dict[str, Any]:
    """One realistic bg.order.list.v2.get item; ``version`` > 0 changes status and times."""
    rnd = random.Random(i)
    n_lines = 1 + i % 3
    status = 2 if version == 0 else 4
    created = BASE_TS + i * 7
    updated = created + 60 + version * 3600
    lines = []
    for j in range(n_lines):
        goods = 601099548000000 + rnd.randrange(1_000_000)
        lines.append(
            {
                "orderSn": f"211-{i:011d}{j}",
                "goodsId": goods,
                "goodsName": rnd.choice(
                    [
                        "Ceramic mug 350 ml",
                        "Tasse à café",
                        "LED strip 5 m",
                        "Phone case — clear",
                        "収納ボックス",
                    ]
                ),
                "skuId": 17592352000000 + rnd.randrange(1_000_000),
                "orderStatus": status,
                "quantity": 1 + rnd.randrange(3),
                "fulfillmentType": "fulfillBySeller",
                "thumbUrl": f"https://img.example.com/{goods}.jpg",
                "originalOrderQuantity": 1,
                "canceledQuantityBeforeShipment": 0,
                "inventoryDeductionWarehouseId": "WH-1",
                "productList": [
                    {
                        "productSkuId": goods + 1,
                        "productId": goods + 2,
                        "extCode": f"SKU-{j}",
                        "soldFactor": 1,
                    }
                ],
                "spec": "Color: blue, Size: M",
                "orderLabel": [{"name": "soon_to_be_overdue", "value": 0}],
            }
        )
    return {
        "parentOrderMap": {
            "parentOrderSn": f"PO-211-{i:014d}",
            "parentOrderStatus": status,
            "parentOrderTime": created,
            "updateTime": updated,
            "expectShipLatestTime": created + 172800,
            "latestDeliveryTime": created + 864000,
            "parentShippingTime": updated if version else None,
            "regionId": 211,
            "siteId": 100,
            "fulfillmentWarning": [],
            "hasShippingFee": False,
            "orderPaymentType": "PPD",
            "parentOrderLabel": [{"name": "customized_products", "value": 0}],
            "shippingMethod": 1,
        },
        "orderList": lines,
    }


REFERENCE_OF = {"insert": "insert", "update": "update"}  # noop phases: none (ratio vs insert)


async def run_phase(
    store: Store, ref: Reference | None, n: int, batch: int, version: int, tag: str
) -> dict[str, Any]:
    """The writer's pages, each followed by the matching reference on the same rows (when the
    phase has one and ``ref`` is given): interleaved, so both see the same load on a shared
    machine."""
    spent = cpu = ref_spent = 0.0
    orders = lines = ref_rows = 0
    totals = {"inserted": 0, "updated": 0, "unchanged": 0}
    kind = REFERENCE_OF.get(tag) if ref is not None else None
    for start in range(0, n, batch):
        items = [page_item(i, version) for i in range(start, min(start + batch, n))]
        last = items[-1]["parentOrderMap"]["updateTime"]
        adv = CursorAdvance("orders", "incremental", datetime.fromtimestamp(last, UTC))
        c0 = time.process_time()
        t0 = time.perf_counter()
        got = await store.write_orders("bench-shop", items, advance=adv)
        spent += time.perf_counter() - t0
        cpu += time.process_time() - c0
        o, ln = got["order"], got["order_line"]
        orders += o.inserted + o.updated + o.unchanged
        lines += ln.inserted + ln.updated + ln.unchanged
        totals["inserted"] += o.inserted
        totals["updated"] += o.updated
        totals["unchanged"] += o.unchanged
        if kind is not None:
            took, rows = await getattr(ref, kind)("bench-shop", items)
            ref_spent += took
            ref_rows += rows
    expected = {"insert": "inserted", "update": "updated", "noop": "unchanged"}[tag.split("-")[0]]
    assert totals[expected] == n, (tag, totals)
    pages = -(-n // batch)
    out = {
        "phase": tag,
        "orders": orders,
        "lines": lines,
        "seconds": round(spent, 3),
        "orders_per_s": round(orders / spent),
        "lines_per_s": round(lines / spent),
        "rows_per_s": round((orders + lines) / spent),
        "ms_per_batch": round(1000 * spent / pages, 3),
        # The bench process's CPU during the writer's calls: the engine side of a page.
        "cpu_ms_per_batch": round(1000 * cpu / pages, 3),
    }
    if kind is not None:
        assert ref_rows == orders + lines, (tag, ref_rows, orders + lines)
        out["reference"] = {
            "what": REFERENCES[kind],
            "seconds": round(ref_spent, 3),
            "rows_per_s": round(ref_rows / ref_spent),
        }
    return out


REFERENCES = {
    "insert": "binary COPY into plain keyed tables",
    "update": "binary COPY into a temp table + UPDATE ... FROM",
}


def ratios(phases: list[dict[str, Any]]) -> dict[str, float]:
    """Writer rows/s over the matching reference's rows/s (no-op: over the COPY reference)."""
    by = {p["phase"]: p for p in phases}
    copy_rate = by["insert"]["reference"]["rows_per_s"]
    out = {
        "insert": by["insert"]["rows_per_s"] / copy_rate,
        "update": by["update"]["rows_per_s"] / by["update"]["reference"]["rows_per_s"],
        "noop": by["noop"]["rows_per_s"] / copy_rate,
    }
    if "noop-after-update" in by:
        out["noop-after-update"] = by["noop-after-update"]["rows_per_s"] / copy_rate
    return {k: round(v, 3) for k, v in out.items()}


async def bench(url: str, n: int, batches: list[int], where: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    pg_version = await conn.fetchval("SHOW server_version")
    results = []
    try:
        for batch in batches:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            await migrate(conn, schema)
            pool = await create_pool(url, schema, min_size=1, max_size=1)
            ref_conn = await connect(url, schema)
            store = Store(pool)
            try:
                ref = await Reference.open(ref_conn)
                phases = []
                for tag, version in (
                    ("insert", 0),
                    ("noop", 0),
                    ("update", 1),
                    ("noop-after-update", 1),
                ):
                    r = await run_phase(store, ref, n, batch, version, tag)
                    vs = r.get("reference", {}).get("rows_per_s")
                    print(
                        f"batch {batch:>5} {tag:<18} {r['orders_per_s']:>8} orders/s "
                        f"{r['rows_per_s']:>8} rows/s  {r['ms_per_batch']:.2f} ms/batch "
                        f"{r['cpu_ms_per_batch']:.2f} ms CPU/batch"
                        + (f"  reference {vs} rows/s" if vs else ""),
                        file=sys.stderr,
                        flush=True,
                    )
                    phases.append(r)
                changes = await pool.fetchval("SELECT count(*) FROM changes")
                size = await pool.fetchval(
                    "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname NOT LIKE 'ref\\_%'",
                    schema,
                )
                vs_copy = ratios(phases)
                print(f"batch {batch:>5} vs_copy {vs_copy}", file=sys.stderr, flush=True)
                results.append(
                    {
                        "batch": batch,
                        "phases": phases,
                        "vs_copy": vs_copy,
                        "changes_rows": changes,
                        "schema_size": size,
                    }
                )
            finally:
                await ref_conn.close()
                await pool.close()
                await conn.execute(f"DROP SCHEMA {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()
    return {
        "benchmark": "diff",
        "orders": n,
        "lines_per_order": "1-3 (avg 2)",
        "references": REFERENCES,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgres": pg_version,
            "database": where,
            "load_average_at_start": list(os.getloadavg()),
        },
        "results": results,
    }


def _run(coro: Any) -> Any:
    """On uvloop, as `temu-sync` and the other scenarios run (bench/worker.py)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    ap.add_argument("--orders", type=int, default=200_000)
    ap.add_argument("--batch-sizes", default="100,1000")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    pg = None
    if args.database_url:
        url, where = args.database_url, "external (--database-url)"
    else:
        pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="temu-sync-bench-")), cleanup="delete")
        url, where = pg.start(), "embedded pgserver (unix socket)"
    try:
        doc = _run(bench(url, args.orders, batches, where))
    finally:
        if pg is not None:
            pg.stop()
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
