"""The orders writer's content-hash path (issue 16): what it skips, what it must still see.

A page is first compared by (key, hash); only orders whose hash differs travel, and those are
compared by payload before anything is written. These tests pin both halves: an unchanged
order gets no new row version whatever its hash says, and a change anywhere in the record
(however deep) is stored with its changes row.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from engine.store import orders_inplace
from engine.store.migrate import load_migrations, migrate
from engine.store.pool import create_pool, quote_ident
from engine.store.store import CursorAdvance, DiffCounts, Store
from tests.fixtures_db import new_schema_name
from tests.integration.test_store_diff import _SingleConn, order, xmins

SHOP = "us-main"


@pytest.fixture(params=["compare first", "guessing new pages", "Postgres compares"])
def store(
    pool: asyncpg.Pool, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Store:
    """Every way a page travels: its (key, hash) pairs first, then changed rows updated in
    place; as plain inserts after an all-new page (every test here starts with one), falling
    back to the compare path; or with the engine unsure of its diff, so the statement that
    compares everything in Postgres writes it."""
    if request.param == "Postgres compares":
        monkeypatch.setattr(orders_inplace, "plan", lambda *args: None)
    return Store(pool, guess_new_after=1 if request.param == "guessing new pages" else None)


def canonical_hash(item: Any) -> bytes:
    return hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).digest()


async def stored_hash(pool: asyncpg.Pool, sn: str) -> bytes | None:
    h: bytes | None = await pool.fetchval(
        "SELECT content_hash FROM orders WHERE parent_order_sn = $1", sn
    )
    return h


async def changes(pool: asyncpg.Pool) -> list[tuple[str, str, str, list[str] | None]]:
    rows = await pool.fetch(
        "SELECT entity, entity_key, op, changed_fields FROM changes ORDER BY id"
    )
    return [(r["entity"], r["entity_key"], r["op"], r["changed_fields"]) for r in rows]


async def test_hash_is_of_the_canonical_record(store: Store, pool: asyncpg.Pool) -> None:
    item = order("PO-1", lines=2)
    await store.write_orders(SHOP, [item])
    assert await stored_hash(pool, "PO-1") == canonical_hash(item)
    # The stored payload is the record; the hash does not depend on key order.
    reordered = {"orderList": item["orderList"], "parentOrderMap": item["parentOrderMap"]}
    assert canonical_hash(reordered) == canonical_hash(item)


async def test_change_deep_inside_a_line_is_stored(store: Store, pool: asyncpg.Pool) -> None:
    page = [order(f"PO-{i}", lines=2) for i in range(5)]
    await store.write_orders(SHOP, page)
    before = await xmins(pool, "order_lines")
    n = len(await changes(pool))

    page2 = copy.deepcopy(page)
    # Three levels down in one line of one order: status, times and everything else equal.
    page2[3]["orderList"][1]["productList"][0]["extCode"][1][1]["c"] = "now set"
    got = await store.write_orders(SHOP, page2)
    assert got == {"order": DiffCounts(0, 1, 4), "order_line": DiffCounts(0, 1, 9)}
    assert sorted((await changes(pool))[n:]) == [
        ("order", "PO-3", "update", ["orderList"]),
        ("order_line", "PO-3-L1", "update", ["productList"]),
    ]
    after = await xmins(pool, "order_lines")
    assert {k for k in before if before[k] != after[k]} == {"PO-3-L1"}
    assert await stored_hash(pool, "PO-3") == canonical_hash(page2[3])
    stored = await pool.fetchval("SELECT payload FROM order_lines WHERE order_sn = 'PO-3-L1'")
    assert stored == page2[3]["orderList"][1]


async def test_changed_field_of_parent_map_is_named(store: Store, pool: asyncpg.Pool) -> None:
    await store.write_orders(SHOP, [order("PO-1", regionId=211, siteId=100)])
    n = len(await changes(pool))
    got = await store.write_orders(SHOP, [order("PO-1", regionId=212, siteId=100)])
    assert got["order"] == DiffCounts(0, 1, 0) and got["order_line"] == DiffCounts(0, 0, 1)
    assert (await changes(pool))[n:] == [("order", "PO-1", "update", ["regionId"])]


async def test_a_differing_hash_alone_writes_nothing(store: Store, pool: asyncpg.Pool) -> None:
    """The hash only decides what travels: a row whose stored hash is stale or missing (written
    before schema version 11) but whose payload equals the record is left untouched."""
    page = [order(f"PO-{i}") for i in range(4)]
    await store.write_orders(SHOP, page)
    await pool.execute("UPDATE orders SET content_hash = NULL WHERE parent_order_sn = 'PO-1'")
    await pool.execute(
        "UPDATE orders SET content_hash = '\\x00'::bytea WHERE parent_order_sn = 'PO-2'"
    )
    snap = {t: await xmins(pool, t) for t in ("orders", "order_lines")}
    n = len(await changes(pool))

    got = await store.write_orders(SHOP, copy.deepcopy(page))
    assert got == {"order": DiffCounts(0, 0, 4), "order_line": DiffCounts(0, 0, 4)}
    assert {t: await xmins(pool, t) for t in snap} == snap
    assert len(await changes(pool)) == n
    assert await pool.fetchval("SELECT count(*) FROM orders WHERE xmax::text <> '0'") == 0
    assert await stored_hash(pool, "PO-1") is None  # lazily filled: only by a real change

    # The same rows, really changed: written, with their hash.
    page[1] = order("PO-1", status=4)
    got = await store.write_orders(SHOP, page)
    assert got["order"] == DiffCounts(0, 1, 3)
    assert await stored_hash(pool, "PO-1") == canonical_hash(page[1])


async def test_same_value_spelled_differently_is_no_change(
    store: Store, pool: asyncpg.Pool
) -> None:
    """1.0 and 1 hash differently but are the same jsonb number: compared, not written."""
    await store.write_orders(SHOP, [order("PO-1", weight=1)])
    snap = await xmins(pool, "orders")
    got = await store.write_orders(SHOP, [order("PO-1", weight=1.0)])
    assert got["order"] == DiffCounts(0, 0, 1)
    assert await xmins(pool, "orders") == snap


async def test_a_true_that_was_one_is_a_change(store: Store, pool: asyncpg.Pool) -> None:
    """Python says True == 1; Postgres (and the contract) do not."""
    await store.write_orders(SHOP, [order("PO-1", hasShippingFee=1)])
    n = len(await changes(pool))
    got = await store.write_orders(SHOP, [order("PO-1", hasShippingFee=True)])
    assert got["order"] == DiffCounts(0, 1, 0)
    assert (await changes(pool))[n:] == [("order", "PO-1", "update", ["hasShippingFee"])]


def _variants() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, old order, new order): changes Python's == and the bytes disagree about."""
    base = order("PO-V", lines=2, label=[{"name": "a", "value": 0}], flag=False)
    out = []

    def variant(name: str, edit: Any) -> None:
        new = copy.deepcopy(base)
        edit(new)
        out.append((name, copy.deepcopy(base), new))

    pm = "parentOrderMap"
    variant("status", lambda o: o[pm].update(parentOrderStatus=4))
    variant("bool for int at top", lambda o: o[pm].update(flag=0))
    variant("bool inside a list", lambda o: o[pm]["label"][0].update(value=False))
    variant("float for int inside", lambda o: o[pm]["label"][0].update(value=0.0))
    variant(
        "float inside, status too",
        lambda o: (o[pm]["label"][0].update(value=0.0), o[pm].update(parentOrderStatus=4)),
    )
    variant("key removed", lambda o: o[pm].pop("regionId"))
    variant("key added", lambda o: o[pm].update(extra={"x": [1, None]}))
    variant("line bool for int", lambda o: o["orderList"][0].update(quantity=True))
    variant("line nested", lambda o: o["orderList"][0]["productList"][0].update(productSkuId=2))
    variant("line NUL", lambda o: o["orderList"][0].update(goodsName="a\x00b"))
    variant("line huge number", lambda o: o["orderList"][0].update(big=orjson.Fragment(b"1" * 25)))
    for what, value in (("NUL", "a\x00b"), ("huge number", orjson.Fragment(b"9" * 25))):
        # Both versions hold the unusual value; something else changes beside it.
        old, new = copy.deepcopy(base), copy.deepcopy(base)
        old["orderList"][0]["odd"] = new["orderList"][0]["odd"] = value
        new["orderList"][0]["orderStatus"] = 5
        out.append((f"line keeps its {what}", old, new))
    variant("line dropped", lambda o: o["orderList"].pop())
    variant("order not an object", lambda o: o.update(orderList=[{"orderSn": "PO-V-L0"}]))
    return out


async def test_changed_fields_match_postgres(store: Store, pool: asyncpg.Pool) -> None:
    """Whoever computes them (engine or statement), changed_fields are jsonb_changed_keys of
    the stored payloads: the order's parentOrderMap keys then its other keys; each line's."""
    for i, (name, old, new) in enumerate(_variants()):
        shop = f"shop-{i}"
        await store.write_orders(shop, [old])
        before = {
            r["k"]: r["p"]
            for r in await pool.fetch(
                # As text: decoding into Python would round a huge number on the way back.
                "SELECT parent_order_sn AS k, payload::text AS p FROM orders WHERE shop_id = $1 "
                "UNION ALL SELECT order_sn, payload::text FROM order_lines WHERE shop_id = $1",
                shop,
            )
        }
        await store.write_orders(shop, [new])
        rows = await pool.fetch(
            "SELECT c.entity, c.entity_key, c.changed_fields, "
            "  CASE c.entity WHEN 'order' THEN "
            "    jsonb_changed_keys($2::text::jsonb -> 'parentOrderMap',"
            "                       o.payload -> 'parentOrderMap')"
            "    || array_remove(jsonb_changed_keys($2::text::jsonb, o.payload), 'parentOrderMap')"
            "  ELSE jsonb_changed_keys(($3::text::jsonb) -> c.entity_key, l.payload)"
            "  END AS expected "
            "FROM changes AS c "
            "LEFT JOIN orders AS o ON o.shop_id = c.shop_id AND o.parent_order_sn = c.entity_key "
            "LEFT JOIN order_lines AS l ON l.shop_id = c.shop_id AND l.order_sn = c.entity_key "
            "WHERE c.shop_id = $1 AND c.op = 'update'",
            shop,
            before["PO-V"],
            "{" + ",".join(f'"{k}": {v}' for k, v in before.items() if k != "PO-V") + "}",
        )
        # 0 and 0.0 are the same jsonb number: nothing to write, nothing to log.
        assert bool(rows) == (name != "float for int inside"), name
        for r in rows:
            assert r["changed_fields"] == r["expected"], (name, r["entity_key"])
            assert r["changed_fields"], (name, r["entity_key"])


async def test_line_diffed_against_a_stale_copy_falls_back(
    store: Store, pool: asyncpg.Pool
) -> None:
    """The engine diffs a line against its copy in the order's stored payload; when the stored
    line is another version (written since through another order), Postgres diffs it."""
    a = order("PO-A", lines=1)
    await store.write_orders(SHOP, [a])
    # Another order carries the same line, changed: the line row moves on, PO-A's copy not.
    b = order("PO-B", lines=0)
    line_b = {**copy.deepcopy(a["orderList"][0]), "goodsName": "renamed"}
    b["orderList"] = [line_b]
    await store.write_orders(SHOP, [b])
    n = len(await changes(pool))
    a2 = copy.deepcopy(a)
    a2["parentOrderMap"]["parentOrderStatus"] = 4
    a2["orderList"][0]["orderStatus"] = 4
    await store.write_orders(SHOP, [a2])
    got = sorted((await changes(pool))[n:])
    # Against the stored line (goodsName "renamed"), not PO-A's copy: both fields changed.
    assert got == [
        ("order", "PO-A", "update", ["parentOrderStatus", "orderList"]),
        ("order_line", "PO-A-L0", "update", ["goodsName", "orderStatus"]),
    ]


async def test_pages_after_a_new_page(store: Store, pool: asyncpg.Pool) -> None:
    """A backfill: all-new pages (plain inserts when guessed), then a page mixing a stored
    order, a repeated key and new ones: whichever way it travels, the same rows and changes."""
    at = datetime(2025, 3, 1, tzinfo=UTC)
    await store.write_orders(SHOP, [order(f"PO-{i}", lines=2) for i in range(3)])
    got = await store.write_orders(
        SHOP,
        [order(f"PO-{i}", lines=2) for i in range(3, 6)],
        advance=CursorAdvance("orders", "incremental", at),
    )
    assert got == {"order": DiffCounts(3, 0, 0), "order_line": DiffCounts(6, 0, 0)}
    assert await store.get_cursor(SHOP, "orders", "incremental") == at
    rows = await pool.fetch(
        "SELECT entity, op, changed_fields, old_status, new_status FROM changes"
    )
    assert len(rows) == 18
    assert {tuple(r) for r in rows} == {
        ("order", "insert", None, None, 2),
        ("order_line", "insert", None, None, 2),
    }
    assert await pool.fetchval("SELECT count(*) FROM orders WHERE content_hash IS NULL") == 0

    later = datetime(2025, 3, 2, tzinfo=UTC)
    mixed = [order("PO-6"), order("PO-1", status=4, lines=2), order("PO-7"), order("PO-6", 5)]
    got = await store.write_orders(
        SHOP, mixed, advance=CursorAdvance("orders", "incremental", later)
    )
    assert got == {"order": DiffCounts(2, 1, 0), "order_line": DiffCounts(2, 2, 0)}
    assert await store.get_cursor(SHOP, "orders", "incremental") == later
    assert (
        await pool.fetchval("SELECT parent_order_status FROM orders WHERE parent_order_sn = 'PO-6'")
        == 5
    )
    assert await pool.fetchval("SELECT count(*) FROM changes") == 18 + 2 + 2 + 1 + 2


async def test_upgrade_of_a_populated_database(pg_url: str) -> None:
    """0011 on a database written before it: rows keep a NULL hash (nothing rewritten by the
    migration), a re-read of the same records writes nothing, a real change fills the hash."""
    name = new_schema_name()
    conn = await asyncpg.connect(pg_url)
    try:
        before = [m for m in load_migrations() if m.name < "0011"]
        await migrate(conn, name, migrations=before)
        pool = await create_pool(pg_url, name, min_size=1, max_size=2)
        try:
            items = [order(f"PO-{i}", lines=2) for i in range(3)]
            for item in items:  # as version 9 stored them
                sn = item["parentOrderMap"]["parentOrderSn"]
                await pool.execute(
                    "INSERT INTO orders (shop_id, parent_order_sn, parent_order_status, payload) "
                    "VALUES ($1, $2, 2, $3)",
                    SHOP,
                    sn,
                    item,
                )
                for line in item["orderList"]:
                    await pool.execute(
                        "INSERT INTO order_lines (shop_id, order_sn, parent_order_sn, "
                        "order_status, payload) VALUES ($1, $2, $3, 2, $4)",
                        SHOP,
                        line["orderSn"],
                        sn,
                        line,
                    )
            snap = {t: await xmins(pool, t) for t in ("orders", "order_lines")}
            assert await migrate(conn, name) == [m.name for m in load_migrations()][len(before) :]
            assert {t: await xmins(pool, t) for t in snap} == snap

            store = Store(pool)
            got = await store.write_orders(SHOP, copy.deepcopy(items))
            assert got == {"order": DiffCounts(0, 0, 3), "order_line": DiffCounts(0, 0, 6)}
            assert {t: await xmins(pool, t) for t in snap} == snap
            assert await pool.fetchval("SELECT count(*) FROM changes") == 0

            items[2]["orderList"][1]["quantity"] = 9
            got = await store.write_orders(SHOP, items)
            assert got == {"order": DiffCounts(0, 1, 2), "order_line": DiffCounts(0, 1, 5)}
            assert await pool.fetchval(
                "SELECT array_agg(changed_fields[1] ORDER BY entity) FROM changes"
            ) == ["orderList", "quantity"]
            assert await stored_hash(pool, "PO-2") == canonical_hash(items[2])
            assert await stored_hash(pool, "PO-0") is None
        finally:
            await pool.close()
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
        await conn.close()


async def test_quiet_commit_stays_with_its_page(pool: asyncpg.Pool) -> None:
    """A quiet page commits its cursor without waiting for the WAL flush; the setting is
    local to that transaction, never left on the connection for the writes that follow (a
    pool would reset it on release: this runs on one connection it keeps)."""
    at = datetime(2025, 3, 1, tzinfo=UTC)
    page = [order("PO-1"), order("PO-2")]
    async with pool.acquire() as conn:
        store = Store(_SingleConn(conn), guess_new_after=None)  # type: ignore[arg-type]
        await store.write_orders(SHOP, page)
        got = await store.write_orders(
            SHOP, page, advance=CursorAdvance("orders", "incremental", at)
        )
        assert got["order"] == DiffCounts(0, 0, 2)
        assert await conn.fetchval("SELECT position FROM sync_state") == at
        assert await conn.fetchval("SHOW synchronous_commit") == "on"


async def test_an_equal_hash_is_trusted(store: Store, pool: asyncpg.Pool) -> None:
    """The other side of the hash: equal means unchanged, without looking at the payload (a
    sha256 collision is not a case to handle). Pinned by forging one: the forged row is left
    alone, and its neighbour, really changed, is written."""
    page = [order("PO-1"), order("PO-2")]
    await store.write_orders(SHOP, page)
    page2 = [order("PO-1", status=4), order("PO-2", status=4)]
    await pool.execute(
        "UPDATE orders SET content_hash = $1 WHERE parent_order_sn = 'PO-1'",
        canonical_hash(page2[0]),
    )
    got = await store.write_orders(SHOP, page2)
    assert got["order"] == DiffCounts(0, 1, 1)
    status = await pool.fetch(
        "SELECT parent_order_sn, parent_order_status FROM orders ORDER BY parent_order_sn"
    )
    assert [tuple(r) for r in status] == [("PO-1", 2), ("PO-2", 4)]
