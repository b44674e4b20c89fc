"""The orders stream: `bg.order.list.v2.get` pages diffed into orders and order_lines."""

from __future__ import annotations

from typing import Any

from engine.store.store import CursorAdvance
from engine.sync.shop_stream import ShopStream, key_as_sent
from engine.sync.windows import Window
from engine.temu.api import Page
from engine.temu.limiter import Lane


class OrdersAdapter(ShopStream):
    stream = "orders"
    entity = "order"

    max_page_size = 100

    async def fetch(
        self, page: int, window: Window, lane: Lane, created: Window | None = None
    ) -> Page:
        return await self._api.list_orders(
            page_number=page,
            page_size=self.page_size,
            update_start=window.start,
            update_end=window.end,
            create_after=None if created is None else created.start,
            create_before=None if created is None else created.end,
            lane=lane,
        )

    def key(self, item: dict[str, Any]) -> str | None:
        parent = item.get("parentOrderMap")
        return key_as_sent(parent.get("parentOrderSn")) if isinstance(parent, dict) else None

    async def write(self, items: list[dict[str, Any]], advance: CursorAdvance | None) -> None:
        counts = await self._store.write_orders(self.shop_id, items, advance=advance)
        self._book(counts, {"order": "parentOrderMap.parentOrderSn", "order_line": "orderSn"})
