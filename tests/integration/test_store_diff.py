"""The diff writers against real Postgres: counts, changes rows, no-op writes, round trips."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.store.store import CursorAdvance, DiffCounts, Store

SHOP = "us-main"


def order(sn: str, status: int = 2, lines: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "parentOrderMap": {
            "parentOrderSn": sn,
            "parentOrderStatus": status,
            "parentOrderTime": 1711009072,
            "updateTime": 1711009100,
            "regionId": 211,
            **extra,
        },
        "orderList": [
            {
                "orderSn": f"{sn}-L{i}",
                "goodsId": 601099548666279,
                "goodsName": "Tasse à café ☕ «Ünïcode»",
                "skuId": 17592352673534,
                "orderStatus": status,
                "quantity": i + 1,
                "productList": [{"productSkuId": 1, "extCode": ["a", ["b", {"c": None}]]}],
            }
            for i in range(lines)
        ],
    }


def ret(sn: str, status: int = 1, ops: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "parentAfterSalesSn": sn,
        "parentOrderSn": f"PO-{sn}",
        "afterSalesType": 2,
        "parentAfterSalesStatus": status,
        "afterSalesStatusGroup": 1,
        "createAt": 1711009072,
        "updateAt": 1711009999,
        "availableOperateList": ops if ops is not None else [1],
        "returnDeliveryType": 3,
        **extra,
    }


async def xmins(pool: asyncpg.Pool, table: str) -> dict[str, str]:
    key = {
        "orders": "parent_order_sn",
        "order_lines": "order_sn",
        "returns": "parent_after_sales_sn",
        "return_lines": "after_sales_sn",
    }[table]
    rows = await pool.fetch(f"SELECT {key} AS k, xmin::text AS x, ctid::text AS c FROM {table}")
    return {r["k"]: f"{r['x']}/{r['c']}" for r in rows}


async def count_changes(pool: asyncpg.Pool) -> int:
    n: int = await pool.fetchval("SELECT count(*) FROM changes")
    return n


async def test_insert_update_noop_counts_and_changes(store: Store, pool: asyncpg.Pool) -> None:
    page = [order("PO-1", lines=2), order("PO-2", lines=1), order("PO-3", lines=3)]
    got = await store.write_orders(SHOP, page)
    assert got == {"order": DiffCounts(3, 0, 0), "order_line": DiffCounts(6, 0, 0)}
    rows = await pool.fetch("SELECT * FROM changes ORDER BY entity, entity_key")
    assert len(rows) == 9
    assert {(r["entity"], r["op"]) for r in rows} == {("order", "insert"), ("order_line", "insert")}
    assert all(r["old_status"] is None and r["new_status"] == 2 for r in rows)
    assert all(r["changed_fields"] is None for r in rows)

    # One order changes status (and so do its lines); the others are byte-identical.
    page2 = [order("PO-1", lines=2), order("PO-2", status=4, lines=1), order("PO-3", lines=3)]
    before = await xmins(pool, "orders")
    got = await store.write_orders(SHOP, page2)
    assert got == {"order": DiffCounts(0, 1, 2), "order_line": DiffCounts(0, 1, 5)}
    after = await xmins(pool, "orders")
    assert before["PO-1"] == after["PO-1"] and before["PO-3"] == after["PO-3"]
    assert before["PO-2"] != after["PO-2"]
    upd = await pool.fetch("SELECT * FROM changes WHERE op = 'update' ORDER BY entity")
    assert [(r["entity"], r["entity_key"]) for r in upd] == [
        ("order", "PO-2"),
        ("order_line", "PO-2-L0"),
    ]
    o, ln = upd
    assert o["old_status"] == 2 and o["new_status"] == 4
    assert o["changed_fields"] == ["parentOrderStatus", "orderList"]
    assert ln["old_status"] == 2 and ln["new_status"] == 4
    assert ln["changed_fields"] == ["orderStatus"]
    assert (
        await pool.fetchval("SELECT parent_order_status FROM orders WHERE parent_order_sn = 'PO-2'")
        == 4
    )


async def test_noop_write_touches_nothing(store: Store, pool: asyncpg.Pool) -> None:
    page = [order(f"PO-{i}", lines=2) for i in range(20)]
    await store.write_orders(SHOP, page)
    rets = [ret(f"R-{i}") for i in range(5)]
    await store.write_returns(SHOP, rets)
    lines = [{"afterSalesSn": "AS-1", "parentAfterSalesSn": "R-1", "afterSalesStatus": 1}]
    await store.write_return_lines(SHOP, lines)
    snap = {t: await xmins(pool, t) for t in ("orders", "order_lines", "returns", "return_lines")}
    n_changes = await count_changes(pool)
    synced = await pool.fetchval("SELECT max(synced_at) FROM orders")

    # Fresh copies: equality must not depend on object identity or key order.
    shuffled = [
        {
            "orderList": copy.deepcopy(p["orderList"]),
            "parentOrderMap": dict(reversed(list(p["parentOrderMap"].items()))),
        }
        for p in page
    ]
    got = await store.write_orders(SHOP, shuffled)
    assert got == {"order": DiffCounts(0, 0, 20), "order_line": DiffCounts(0, 0, 40)}
    assert (await store.write_returns(SHOP, copy.deepcopy(rets))).counts == DiffCounts(0, 0, 5)
    assert await store.write_return_lines(SHOP, copy.deepcopy(lines)) == DiffCounts(0, 0, 1)

    assert {t: await xmins(pool, t) for t in snap} == snap
    assert await count_changes(pool) == n_changes
    assert await pool.fetchval("SELECT max(synced_at) FROM orders") == synced
    # No row was even locked: a locker would have left its xid in xmax.
    assert await pool.fetchval("SELECT count(*) FROM orders WHERE xmax::text <> '0'") == 0


async def test_payload_round_trip(store: Store, pool: asyncpg.Pool) -> None:
    item = order(
        "PO-ü",
        lines=2,
        note='日本語 \u2028 "quoted" \\ back',
        big=2**62,
        neg=-7,
        flt=1.5,
        empty={},
        nested=[[1, [2, [3]]], {"a": [None, True]}],
    )
    await store.write_orders(SHOP, [item])
    got = await pool.fetchval("SELECT payload FROM orders WHERE parent_order_sn = 'PO-ü'")
    assert got == item
    line = await pool.fetchrow("SELECT * FROM order_lines WHERE order_sn = 'PO-ü-L1'")
    assert line["payload"] == item["orderList"][1]
    assert line["goods_id"] == 601099548666279 and line["sku_id"] == 17592352673534
    assert line["quantity"] == 2 and line["parent_order_sn"] == "PO-ü"
    row = await pool.fetchrow("SELECT * FROM orders WHERE parent_order_sn = 'PO-ü'")
    assert row["parent_order_time"] == datetime.fromtimestamp(1711009072, UTC)
    assert row["update_time"] == datetime.fromtimestamp(1711009100, UTC)


async def test_duplicates_in_one_batch_last_wins(store: Store, pool: asyncpg.Pool) -> None:
    page = [order("PO-1", status=1), order("PO-2"), order("PO-1", status=5)]
    got = await store.write_orders(SHOP, page)
    assert got["order"] == DiffCounts(2, 0, 0)
    assert got["order_line"] == DiffCounts(2, 0, 0)
    assert (
        await pool.fetchval("SELECT parent_order_status FROM orders WHERE parent_order_sn = 'PO-1'")
        == 5
    )
    assert (
        await pool.fetchval("SELECT order_status FROM order_lines WHERE order_sn = 'PO-1-L0'") == 5
    )
    rets = [ret("R-1", status=1), ret("R-1", status=10), ret("R-2")]
    w = await store.write_returns(SHOP, rets)
    assert w.counts == DiffCounts(2, 0, 0) and w.changed_sns == ["R-1", "R-2"]
    assert (
        await pool.fetchval("SELECT status FROM returns WHERE parent_after_sales_sn = 'R-1'") == 10
    )
    assert await count_changes(pool) == 6


async def test_an_order_key_holding_u0000_is_stored_under_its_u_fffd_key(
    store: Store, pool: asyncpg.Pool
) -> None:
    """interface.md: a string Postgres refuses is stored as close as Postgres allows (U+FFFD
    for U+0000), never dropped. The key is the order's own: the engine must read it as Postgres
    stores it, or it loses the order (compared under one key, stored under the other)."""
    page = [order("OK-1"), order("BAD\u0000-1"), order("BAD-2", lines=2)]
    page[2]["orderList"][1]["orderSn"] = "BAD\u0000-2-L1"
    got = await store.write_orders(SHOP, page)
    assert got["order"] == DiffCounts(3, 0, 0)
    assert got["order_line"] == DiffCounts(4, 0, 0)
    keys = await pool.fetch("SELECT parent_order_sn FROM orders ORDER BY 1")
    assert [r["parent_order_sn"] for r in keys] == ["BAD-2", "BAD\ufffd-1", "OK-1"]
    lines = await pool.fetch("SELECT order_sn FROM order_lines ORDER BY 1")
    assert "BAD\ufffd-2-L1" in [r["order_sn"] for r in lines]
    # Read again unchanged: nothing is written, under either spelling.
    before = await pool.fetch("SELECT parent_order_sn, xmin::text FROM orders ORDER BY 1")
    got = await store.write_orders(SHOP, page)
    assert got["order"] == DiffCounts(0, 0, 3) and got["order_line"] == DiffCounts(0, 0, 4)
    assert await pool.fetch("SELECT parent_order_sn, xmin::text FROM orders ORDER BY 1") == before
    # Changed: updated in place, one changes row.
    page[1]["parentOrderMap"]["parentOrderStatus"] = 4
    got = await store.write_orders(SHOP, page)
    assert got["order"] == DiffCounts(0, 1, 2)


async def test_missing_keys_skipped_and_lenient_values(store: Store, pool: asyncpg.Pool) -> None:
    no_key = order("X")
    del no_key["parentOrderMap"]["parentOrderSn"]
    odd = {
        "parentOrderMap": {
            "parentOrderSn": "PO-S",
            "parentOrderStatus": "4",
            "parentOrderTime": "1711009072000",
            "updateTime": "soon",
        },
        "orderList": [
            {
                "orderSn": "L-1",
                "goodsId": "601099548666279",
                "skuId": None,
                "quantity": 2.0,
                "orderStatus": "bad",
            },
            {"goodsId": 1},  # no orderSn
        ],
    }
    minimal = {"parentOrderMap": {"parentOrderSn": "PO-M"}}
    got = await store.write_orders(SHOP, [no_key, odd, minimal, {}])
    # Records without their key are not stored; they are set aside (rejected_records).
    assert got["order"] == DiffCounts(2, 0, 0, skipped=2, rejected=2)
    assert got["order_line"] == DiffCounts(1, 0, 0, skipped=1, rejected=1)
    row = await pool.fetchrow("SELECT * FROM orders WHERE parent_order_sn = 'PO-S'")
    assert row["parent_order_status"] == 4
    assert row["parent_order_time"] == datetime.fromtimestamp(1711009072, UTC)  # ms read as ms
    assert row["update_time"] is None
    line = await pool.fetchrow("SELECT * FROM order_lines WHERE order_sn = 'L-1'")
    assert (line["goods_id"], line["sku_id"], line["quantity"], line["order_status"]) == (
        601099548666279,
        None,
        2,
        None,
    )
    m = await pool.fetchrow("SELECT * FROM orders WHERE parent_order_sn = 'PO-M'")
    assert m["parent_order_status"] is None and m["payload"] == minimal

    w = await store.write_returns(SHOP, [{"parentOrderSn": "x"}, {"parentAfterSalesSn": "R-9"}])
    assert w.counts == DiffCounts(1, 0, 0, skipped=1)
    r = await pool.fetchrow("SELECT * FROM returns WHERE parent_after_sales_sn = 'R-9'")
    assert r["status"] is None and r["available_operations"] is None
    assert await store.write_return_lines(SHOP, [{"goodsId": 1}]) == DiffCounts(skipped=1)


async def test_returns_columns_changes_and_changed_sns(store: Store, pool: asyncpg.Pool) -> None:
    w = await store.write_returns(SHOP, [ret("R-1"), ret("R-2", ops=[1, 10], status=8)])
    assert w.counts == DiffCounts(2, 0, 0) and w.changed_sns == ["R-1", "R-2"]
    r = await pool.fetchrow("SELECT * FROM returns WHERE parent_after_sales_sn = 'R-2'")
    assert r["available_operations"] == [1, 10]
    assert (r["status"], r["status_group"], r["after_sales_type"], r["return_delivery_type"]) == (
        8,
        1,
        2,
        3,
    )
    assert r["parent_order_sn"] == "PO-R-2"
    assert r["create_at"] == datetime.fromtimestamp(1711009072, UTC)

    w = await store.write_returns(SHOP, [ret("R-1", status=2), ret("R-2", ops=[1, 10], status=8)])
    assert w.counts == DiffCounts(0, 1, 1) and w.changed_sns == ["R-1"]
    ch = await pool.fetchrow("SELECT * FROM changes WHERE op = 'update'")
    assert (ch["entity"], ch["entity_key"], ch["old_status"], ch["new_status"]) == (
        "return",
        "R-1",
        1,
        2,
    )
    assert ch["changed_fields"] == ["parentAfterSalesStatus"]

    # A removed key is a change too.
    r1 = ret("R-1", status=2)
    del r1["returnDeliveryType"]
    w = await store.write_returns(SHOP, [r1])
    assert w.counts == DiffCounts(0, 1, 0)
    last = await pool.fetchrow("SELECT * FROM changes ORDER BY id DESC LIMIT 1")
    assert last["changed_fields"] == ["returnDeliveryType"]
    assert (
        await pool.fetchval(
            "SELECT return_delivery_type FROM returns WHERE parent_after_sales_sn = 'R-1'"
        )
        is None
    )


async def test_return_lines_and_logistics(store: Store, pool: asyncpg.Pool) -> None:
    lines = [
        {
            "afterSalesSn": "AS-1",
            "parentAfterSalesSn": "R-1",
            "goodsId": 601099548666279,
            "skuId": 5,
            "applyAfterSalesGoodsNumber": 2,
            "afterSalesStatus": 1,
        },
        {"afterSalesSn": "AS-2", "parentAfterSalesSn": "R-1", "afterSalesStatus": 1},
    ]
    assert await store.write_return_lines(SHOP, lines) == DiffCounts(2, 0, 0)
    lines[1]["afterSalesStatus"] = 5
    assert await store.write_return_lines(SHOP, lines) == DiffCounts(0, 1, 1)
    row = await pool.fetchrow("SELECT * FROM return_lines WHERE after_sales_sn = 'AS-1'")
    assert (row["goods_id"], row["quantity"], row["parent_after_sales_sn"]) == (
        601099548666279,
        2,
        "R-1",
    )
    ch = await pool.fetchrow("SELECT * FROM changes WHERE op = 'update'")
    assert (ch["entity"], ch["old_status"], ch["new_status"]) == ("return_line", 1, 5)

    info = [
        {"carrierName": "", "trackingNumber": ""},
        {
            "carrierName": "UPS",
            "trackingNumber": "1Z999",
            "returnWarehouseType": "1",
            "returnWarehouseRegion1Name": "United States",
        },
    ]
    assert await store.write_return_logistics(SHOP, "R-1", {"logisticsInfoList": info})
    assert not await store.write_return_logistics(SHOP, "R-1", {"logisticsInfoList": info})
    got = await store.get_return_logistics(SHOP, "R-1")
    assert got is not None
    assert (got["carrier_name"], got["tracking_number"], got["return_warehouse_type"]) == (
        "UPS",
        "1Z999",
        1,
    )
    assert got["payload"] == info
    assert await store.write_return_logistics(SHOP, "R-2", {})
    got = await store.get_return_logistics(SHOP, "R-2")
    assert got is not None and got["payload"] == [] and got["tracking_number"] is None


async def test_shops_are_separate(store: Store, pool: asyncpg.Pool) -> None:
    await store.write_orders("a", [order("PO-1")])
    got = await store.write_orders("b", [order("PO-1")])
    assert got["order"] == DiffCounts(1, 0, 0)
    assert await pool.fetchval("SELECT count(*) FROM orders") == 2


async def test_cursor_advances_with_rows_and_never_backwards(
    store: Store, pool: asyncpg.Pool
) -> None:
    t1 = datetime(2025, 3, 1, tzinfo=UTC)
    t0 = datetime(2025, 2, 1, tzinfo=UTC)
    inc = "incremental"
    await store.write_orders(SHOP, [order("PO-1")], advance=CursorAdvance("orders", inc, t1))
    assert await store.get_cursor(SHOP, "orders", inc) == t1
    await store.write_orders(SHOP, [order("PO-2")], advance=CursorAdvance("orders", inc, t0))
    assert await store.get_cursor(SHOP, "orders", inc) == t1
    # An advance with nothing new (all no-ops) still moves the cursor.
    t2 = datetime(2025, 4, 1, tzinfo=UTC)
    got = await store.write_orders(SHOP, [order("PO-2")], advance=CursorAdvance("orders", inc, t2))
    assert got["order"] == DiffCounts(0, 0, 1)
    assert await store.get_cursor(SHOP, "orders", inc) == t2
    # Backfill cursors follow the caller, in either direction.
    bf = "backfill:2025-01-01T00:00:00Z:2025-02-01T00:00:00Z"
    await store.write_returns(SHOP, [ret("R-1")], advance=CursorAdvance("returns", bf, t1))
    await store.write_returns(SHOP, [], advance=CursorAdvance("returns", bf, t0))
    assert await store.get_cursor(SHOP, "returns", bf) == t0
    assert await store.get_cursor(SHOP, "returns", inc) is None
    assert await store.advance_cursor(SHOP, CursorAdvance("orders", inc, t0)) == t2


async def test_cursor_advance_is_atomic_with_rows(store: Store, pool: asyncpg.Pool) -> None:
    t1 = datetime(2025, 3, 1, tzinfo=UTC)
    # A lock that makes the write fail (statement timeout) must take the cursor down with it.
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("LOCK TABLE sync_state IN EXCLUSIVE MODE")
        async with pool.acquire() as conn:
            await conn.execute("SET statement_timeout = '300ms'")
            store2 = Store(_SingleConn(conn))  # type: ignore[arg-type]
            try:
                await store2.write_orders(
                    SHOP, [order("PO-1")], advance=CursorAdvance("orders", "incremental", t1)
                )
                raise AssertionError("write should have timed out")
            except asyncpg.QueryCanceledError:
                pass
            await conn.execute("RESET statement_timeout")
    assert await pool.fetchval("SELECT count(*) FROM orders") == 0
    assert await pool.fetchval("SELECT count(*) FROM changes") == 0
    assert await store.get_cursor(SHOP, "orders", "incremental") is None


class _SingleConn:
    """Enough of a pool for Store to run on one given connection."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetchrow(self, *args: Any) -> Any:
        return await self._conn.fetchrow(*args)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        yield self._conn


async def test_status_and_errors(store: Store) -> None:
    await store.record_error(SHOP, "orders", "incremental", "boom")
    rows = await store.sync_status()
    assert rows[0]["last_error"] == "boom" and rows[0]["failing"]
    await store.record_success(SHOP, "orders", "incremental")
    await store.set_cursor(SHOP, "orders", "incremental", datetime(2025, 1, 1, tzinfo=UTC))
    (row,) = await store.sync_status()
    assert row["last_error"] == "boom" and not row["failing"]
    assert row["cursor"] == datetime(2025, 1, 1, tzinfo=UTC) and row["lag_s"] > 0


async def test_oc_tokens(store: Store) -> None:
    assert await store.get_oc_tokens("cid") is None
    exp = datetime(2025, 1, 1, tzinfo=UTC)
    await store.save_oc_tokens("cid", "RT-1", "AT-1", exp)
    await store.save_oc_tokens("cid", "RT-2", "AT-2", exp)
    tok = await store.get_oc_tokens("cid")
    assert tok is not None and (tok.refresh_token, tok.access_token, tok.expires_at) == (
        "RT-2",
        "AT-2",
        exp,
    )


async def test_status_lists_every_configured_shop_and_stream(store: Store) -> None:
    """A configured shop that never synced is listed; one no longer configured is marked."""
    await store.record_success("gone-shop", "orders", "incremental")
    await store.set_cursor(SHOP, "orders", "incremental", datetime(2025, 1, 1, tzinfo=UTC))
    rows = await store.sync_status([SHOP, "new-shop"], ["orders", "returns"])
    got = {(r["shop_id"], r["stream"], r["kind"]): r for r in rows}
    assert set(got) == {
        (SHOP, "orders", "incremental"),
        (SHOP, "returns", "incremental"),
        ("new-shop", "orders", "incremental"),
        ("new-shop", "returns", "incremental"),
        ("gone-shop", "orders", "incremental"),
    }
    assert got[("new-shop", "orders", "incremental")]["cursor"] is None
    assert got[(SHOP, "orders", "incremental")]["cursor"] == datetime(2025, 1, 1, tzinfo=UTC)
    assert got[("gone-shop", "orders", "incremental")]["configured"] is False
    assert all(r["configured"] for k, r in got.items() if k[0] != "gone-shop")
