"""The two references the diff writer is measured against, on the same rows and server.

- insert: binary COPY (asyncpg ``copy_records_to_table``) of a page's orders and lines into
  plain keyed tables (the writer's columns and primary keys, nothing else);
- update: the naive set-based update: binary COPY of the page into a temp table, then
  ``UPDATE ... FROM`` it.

Both run one transaction per page, like the writer. Records are built outside the timed
section (the writer's page items are too); the timed section is what asyncpg and Postgres do.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

ORDER_COLS = (
    "shop_id",
    "parent_order_sn",
    "parent_order_status",
    "parent_order_time",
    "update_time",
    "payload",
)
LINE_COLS = (
    "shop_id",
    "order_sn",
    "parent_order_sn",
    "order_status",
    "goods_id",
    "sku_id",
    "quantity",
    "payload",
)

_TABLES = """
CREATE TABLE ref_orders (
    shop_id text NOT NULL, parent_order_sn text NOT NULL, parent_order_status integer,
    parent_order_time timestamptz, update_time timestamptz, payload jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(), created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, parent_order_sn)
);
CREATE TABLE ref_order_lines (
    shop_id text NOT NULL, order_sn text NOT NULL, parent_order_sn text NOT NULL,
    order_status integer, goods_id bigint, sku_id bigint, quantity integer,
    payload jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(), created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, order_sn)
);
CREATE TEMP TABLE ref_orders_in (LIKE ref_orders INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE ref_order_lines_in (LIKE ref_order_lines INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
"""

_UPDATE_ORDERS = """
UPDATE ref_orders AS t SET
    parent_order_status = s.parent_order_status, parent_order_time = s.parent_order_time,
    update_time = s.update_time, payload = s.payload, synced_at = now()
FROM ref_orders_in AS s
WHERE t.shop_id = s.shop_id AND t.parent_order_sn = s.parent_order_sn
"""

_UPDATE_LINES = """
UPDATE ref_order_lines AS t SET
    parent_order_sn = s.parent_order_sn, order_status = s.order_status,
    goods_id = s.goods_id, sku_id = s.sku_id, quantity = s.quantity, payload = s.payload,
    synced_at = now()
FROM ref_order_lines_in AS s
WHERE t.shop_id = s.shop_id AND t.order_sn = s.order_sn
"""


def _ts(seconds: Any) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if isinstance(seconds, int) else None


def records(shop: str, items: list[dict[str, Any]]) -> tuple[list[tuple[Any, ...]], ...]:
    """The page as COPY records (typed columns read in Python, as a COPY loader would)."""
    orders, lines = [], []
    for item in items:
        head = item["parentOrderMap"]
        sn = head["parentOrderSn"]
        orders.append(
            (
                shop,
                sn,
                head.get("parentOrderStatus"),
                _ts(head.get("parentOrderTime")),
                _ts(head.get("updateTime")),
                item,
            )
        )
        for line in item["orderList"]:
            lines.append(
                (
                    shop,
                    line["orderSn"],
                    sn,
                    line.get("orderStatus"),
                    line.get("goodsId"),
                    line.get("skuId"),
                    line.get("quantity"),
                    line,
                )
            )
    return orders, lines


class Reference:
    """One connection (the pool's codecs) holding the reference tables of one bench schema."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, conn: asyncpg.Connection) -> Reference:
        await conn.execute(_TABLES)
        return cls(conn)

    async def insert(self, shop: str, items: list[dict[str, Any]]) -> tuple[float, int]:
        """Seconds spent and rows written (orders + lines)."""
        orders, lines = records(shop, items)
        t0 = time.perf_counter()
        async with self._conn.transaction():
            await self._conn.copy_records_to_table("ref_orders", records=orders, columns=ORDER_COLS)
            await self._conn.copy_records_to_table(
                "ref_order_lines", records=lines, columns=LINE_COLS
            )
        return time.perf_counter() - t0, len(orders) + len(lines)

    async def update(self, shop: str, items: list[dict[str, Any]]) -> tuple[float, int]:
        orders, lines = records(shop, items)
        t0 = time.perf_counter()
        async with self._conn.transaction():
            await self._conn.copy_records_to_table(
                "ref_orders_in", records=orders, columns=ORDER_COLS
            )
            await self._conn.copy_records_to_table(
                "ref_order_lines_in", records=lines, columns=LINE_COLS
            )
            n_o = int((await self._conn.execute(_UPDATE_ORDERS)).split()[-1])
            n_l = int((await self._conn.execute(_UPDATE_LINES)).split()[-1])
        assert (n_o, n_l) == (len(orders), len(lines)), "reference update missed rows"
        return time.perf_counter() - t0, n_o + n_l
