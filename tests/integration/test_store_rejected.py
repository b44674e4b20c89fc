"""A page with hostile records is stored but for what Postgres cannot hold, which is set aside
in rejected_records, in the same transaction as the cursor (interface.md)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from engine.store.store import CursorAdvance, DiffCounts, Store

SHOP = "s1"
HUGE_KEY = secrets.token_hex(20_000)  # too long for a btree index entry, even compressed


def order(sn: str, status: Any = 2, lines: list[str] | None = None) -> dict[str, Any]:
    return {
        "parentOrderMap": {"parentOrderSn": sn, "parentOrderStatus": status, "updateTime": 5},
        "orderList": [
            {"orderSn": ln, "orderStatus": status, "quantity": 1, "goodsId": "7\u3000"}
            for ln in (lines if lines is not None else [f"{sn}-1"])
        ],
    }


def ret(sn: str, status: Any = 2) -> dict[str, Any]:
    return {"parentAfterSalesSn": sn, "parentAfterSalesStatus": status, "createAt": "1\u2003"}


async def rejected(store: Store) -> list[dict[str, Any]]:
    rows = await store.pool.fetch(
        "SELECT stream, entity_key, reason, seen FROM rejected_records ORDER BY stream, reason"
    )
    return [dict(r) for r in rows]


async def test_bad_rows_are_set_aside_and_the_rest_stored(store: Store) -> None:
    at = datetime(2024, 5, 1, tzinfo=UTC)
    page = [order(f"PO-{i}") for i in range(40)]
    page[3] = order("PO-3", status="2\u3000")  # unreadable status: stored, typed column NULL
    page[7] = order(HUGE_KEY)  # no usable key: set aside
    page[11] = order("PO-11", lines=["PO-11-1", HUGE_KEY, "PO-11-3"])  # one bad line
    page[20] = {"parentOrderMap": {"parentOrderStatus": 1}}  # no key at all
    counts = await store.write_orders(
        SHOP, page, advance=CursorAdvance("orders", "incremental", at)
    )
    assert counts["order"].inserted == 38
    assert counts["order"].rejected == 2
    assert counts["order_line"].rejected == 1
    assert counts["order_line"].inserted == 39  # 37 single-line orders + 2 of PO-11
    assert await store.get_cursor(SHOP, "orders", "incremental") == at
    status = await store.pool.fetchval(
        "SELECT parent_order_status FROM orders WHERE parent_order_sn = 'PO-3'"
    )
    assert status is None
    assert (
        await store.pool.fetchval(
            "SELECT count(*) FROM order_lines WHERE parent_order_sn = 'PO-11'"
        )
        == 2
    )
    got = await rejected(store)
    assert [(r["stream"], r["entity_key"] is None) for r in got] == [
        ("orders", False),
        ("orders", False),
        ("orders", True),
    ]
    # Reading the same page again changes nothing and counts the rejected orders as seen again
    # (PO-11 is unchanged, so its lines are not even looked at).
    again = await store.write_orders(SHOP, page)
    assert again["order"] == DiffCounts(0, 0, 38, 1, 2)
    assert sorted(r["seen"] for r in await rejected(store)) == [1, 2, 2]


async def test_returns_bundle_sets_aside_bad_returns_and_lines(store: Store) -> None:
    items = [ret(f"R-{i}") for i in range(10)] + [ret(HUGE_KEY), {"parentOrderSn": "x"}]
    lines = [{"afterSalesSn": "L-1", "parentAfterSalesSn": "R-1"}, {"afterSalesSn": HUGE_KEY}]
    at = datetime(2024, 5, 1, tzinfo=UTC)
    got = await store.write_returns_bundle(
        SHOP, items, lines=lines, logistics={}, advance=CursorAdvance("returns", "incremental", at)
    )
    assert got["return"].inserted == 10 and got["return"].rejected == 2
    assert got["return_line"].inserted == 1 and got["return_line"].rejected == 1
    assert await store.get_cursor(SHOP, "returns", "incremental") == at
    assert await store.pool.fetchval("SELECT count(*) FROM rejected_records") == 3


async def test_a_python_error_in_the_writer_fails_the_page_instead_of_setting_it_aside(
    store: Store, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TypeError of our own is a bug, not bad data: taken for bad data it would set every
    record of every page aside in rejected_records. It fails the write (the pass fails, loudly,
    and the page is read again), and nothing is written or set aside."""
    from engine.store import orders_write

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("a bug in the writer")

    monkeypatch.setattr(orders_write, "write_page", broken)
    with pytest.raises(TypeError, match="a bug in the writer"):
        await store.write_orders("s", [order("PO-1"), order("PO-2")])
    assert await pool.fetchval("SELECT count(*) FROM orders") == 0
    assert await rejected(store) == []
