"""The orders writer's update-in-place path (issue 16): a changed page is diffed by the engine
and written by ctid as the row versions it read; a row that moved in between sends the page
through the statement that compares everything, and nothing is written twice or half."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest

from engine.store import isolation, orders_inplace, orders_write
from engine.store.store import DiffCounts, Store
from tests.integration.test_store_diff import order, xmins

SHOP = "us-main"


async def changes(pool: asyncpg.Pool) -> list[tuple[str, str, str, list[str] | None, Any, Any]]:
    rows = await pool.fetch(
        "SELECT entity, entity_key, op, changed_fields, old_status, new_status FROM changes "
        "ORDER BY id"
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


@pytest.fixture
def only_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test when a page leaves the in-place path (the comparing statement or the
    careful path would store it just as well, only slower: nothing else would notice)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the page left the in-place path")

    monkeypatch.setattr(orders_write, "_write_compared", refuse)
    monkeypatch.setattr(isolation, "write_orders", refuse)


async def test_changed_page_is_written_in_place(
    pool: asyncpg.Pool, store: Store, only_in_place: None
) -> None:
    page = [order(f"PO-{i}", lines=2) for i in range(4)]
    await store.write_orders(SHOP, page)
    before = await xmins(pool, "order_lines")
    n = len(await changes(pool))
    new = copy.deepcopy(page)
    new[0]["parentOrderMap"]["parentOrderStatus"] = 4  # the order alone
    new[1]["orderList"][1]["quantity"] = 9  # one line (and so the order's orderList)
    new[2]["orderList"].append({**new[2]["orderList"][0], "orderSn": "PO-2-L9"})  # a new line
    new.append(order("PO-NEW", lines=1))  # a new order in a changed page
    got = await store.write_orders(SHOP, new)
    assert got == {"order": DiffCounts(1, 3, 1), "order_line": DiffCounts(2, 1, 7)}
    assert sorted((await changes(pool))[n:]) == [
        ("order", "PO-0", "update", ["parentOrderStatus"], 2, 4),
        ("order", "PO-1", "update", ["orderList"], 2, 2),
        ("order", "PO-2", "update", ["orderList"], 2, 2),
        ("order", "PO-NEW", "insert", None, None, 2),
        ("order_line", "PO-1-L1", "update", ["quantity"], 2, 2),
        ("order_line", "PO-2-L9", "insert", None, None, 2),
        ("order_line", "PO-NEW-L0", "insert", None, None, 2),
    ]
    after = await xmins(pool, "order_lines")
    # Only the changed line has a new row version; PO-0's lines did not change with it.
    assert {k for k in before if before[k] != after[k]} == {"PO-1-L1"}
    stored = await pool.fetchrow(
        "SELECT payload, parent_order_status FROM orders WHERE parent_order_sn = 'PO-0'"
    )
    assert stored["payload"] == new[0] and stored["parent_order_status"] == 4
    line = await pool.fetchrow(
        "SELECT payload, quantity, parent_order_sn FROM order_lines WHERE order_sn = 'PO-2-L9'"
    )
    assert (line["payload"], line["quantity"], line["parent_order_sn"]) == (
        new[2]["orderList"][2],
        1,
        "PO-2",
    )
    # The same page again is quiet.
    assert (await store.write_orders(SHOP, new))["order"] == DiffCounts(0, 0, 5)


async def test_line_stored_under_another_order_is_diffed_against_its_own_row(
    pool: asyncpg.Pool, store: Store, only_in_place: None
) -> None:
    """A line that moved to another order is found by its key; its stored row (not a copy in
    an order's payload) is what it is diffed against, and it follows its new order."""
    a = order("PO-A", lines=1)
    await store.write_orders(SHOP, [a])
    b = order("PO-B", lines=0)
    b["orderList"] = [{**a["orderList"][0], "goodsName": "renamed"}]
    n = len(await changes(pool))
    got = await store.write_orders(SHOP, [b])
    assert got == {"order": DiffCounts(1, 0, 0), "order_line": DiffCounts(0, 1, 0)}
    assert (await changes(pool))[n:] == [
        ("order", "PO-B", "insert", None, None, 2),
        ("order_line", "PO-A-L0", "update", ["goodsName"], 2, 2),
    ]
    assert (
        await pool.fetchval("SELECT parent_order_sn FROM order_lines WHERE order_sn = 'PO-A-L0'")
        == "PO-B"
    )


async def test_row_changed_after_the_read_sends_the_page_to_postgres(
    pool: asyncpg.Pool, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer changes a row between the read and the in-place write: the in-place
    statement writes nothing (not even its other rows or the cursor), and the page is written
    by the comparing statement against the row as it now is."""
    page = [order(f"PO-{i}", lines=1) for i in range(3)]
    await store.write_orders(SHOP, page)
    new = copy.deepcopy(page)
    for item in new:
        item["parentOrderMap"]["parentOrderStatus"] = 5
    meanwhile = copy.deepcopy(page[1])
    meanwhile["parentOrderMap"]["regionId"] = 7  # written by someone else after the read
    update = orders_write._update
    compared = orders_write._write_compared
    seen: list[str] = []

    async def changed_in_between(*args: Any) -> Any:
        seen.append("in place")
        await pool.execute(
            "UPDATE orders SET payload = $1 WHERE parent_order_sn = 'PO-1'", meanwhile
        )
        try:
            return await update(*args)
        except asyncpg.SerializationError:
            seen.append("refused")
            raise

    def counting(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(*args: Any) -> Any:
            seen.append("compared")
            return await fn(*args)

        return run

    monkeypatch.setattr(orders_write, "_update", changed_in_between)
    monkeypatch.setattr(orders_write, "_write_compared", counting(compared))
    n = len(await changes(pool))
    got = await store.write_orders(SHOP, new)
    assert seen == ["in place", "refused", "compared"]
    assert got == {"order": DiffCounts(0, 3, 0), "order_line": DiffCounts(0, 0, 3)}
    rows = (await changes(pool))[n:]
    assert sorted(r[:4] for r in rows) == [
        ("order", "PO-0", "update", ["parentOrderStatus"]),
        # Diffed against the row as the other writer left it: its regionId goes back too.
        ("order", "PO-1", "update", ["parentOrderStatus", "regionId"]),
        ("order", "PO-2", "update", ["parentOrderStatus"]),
    ]
    assert await pool.fetchval("SELECT count(*) FROM orders WHERE parent_order_status = 5") == 3


async def test_a_refused_in_place_write_leaves_no_trace(
    pool: asyncpg.Pool, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rows_as_read ends the statement before anything is committed: no row, no changes row."""
    page = [order(f"PO-{i}") for i in range(2)]
    await store.write_orders(SHOP, page)
    before_rows = await xmins(pool, "orders")
    n = len(await changes(pool))
    new = copy.deepcopy(page)
    for item in new:
        item["parentOrderMap"]["parentOrderStatus"] = 5
    update = orders_write._update

    async def one_row_gone(conn: Any, q: Any, shop: str, p: Any, advance: Any) -> Any:
        await pool.execute("DELETE FROM orders WHERE parent_order_sn = 'PO-1'")
        return await update(conn, q, shop, p, advance)

    async def stop(*args: Any) -> Any:
        raise RuntimeError("stop here")

    monkeypatch.setattr(orders_write, "_update", one_row_gone)
    monkeypatch.setattr(orders_write, "_write_compared", stop)
    with pytest.raises(RuntimeError, match="stop here"):
        await store.write_orders(SHOP, new)
    assert len(await changes(pool)) == n
    after = await xmins(pool, "orders")
    assert after == {k: v for k, v in before_rows.items() if k != "PO-1"}


async def test_update_reaches_rows_by_ctid_even_in_a_generic_plan(
    pool: asyncpg.Pool, store: Store
) -> None:
    """A cached generic plan knows neither the shop nor the page: the in-place update must
    still reach each table through the ctids it read (a TID scan), never by scanning it (a
    join on ctid alone is planned as a seq scan of both tables here)."""
    # No statistics yet (a new install): a join on ctid alone is planned as a seq scan here.
    await store.write_orders(SHOP, [order(f"PO-{i}", lines=2) for i in range(1000)])
    page = [order(f"PO-{i}", status=4, lines=2) for i in range(100)]
    async with pool.acquire() as conn:
        prepared = orders_write.prepare(page)
        probed = orders_inplace.Probed.of(
            await conn.fetchrow(
                store._q["orders_changed"],
                SHOP,
                orjson.Fragment(prepared.probe_document()),
                None,
                None,
                None,
            )
        )
        plan = orders_inplace.plan(
            prepared.sns,
            prepared.hashes,
            prepared.payloads,
            prepared.items,
            prepared.had_nul,
            probed,
        )
        assert plan is not None
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        rows = await conn.fetch(
            "EXPLAIN " + store._q["update_orders"],
            SHOP,
            orjson.Fragment(plan.document()),
            None,
            None,
            None,
        )
        await conn.execute("RESET plan_cache_mode")
    text = "\n".join(r[0] for r in rows)
    assert "Tid Scan on orders" in text and "Tid Scan on order_lines" in text, text
    for scan in ("Seq Scan on order", "Bitmap Heap Scan on order", "Index Scan using order"):
        assert scan not in text, text
