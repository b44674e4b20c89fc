"""The orders page write with its careful path: the fast path (orders_write.py) for pages
whose records all have their keys, the isolating one (isolation.py) for the rest and for pages
Postgres refuses on the data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from engine.store import isolation, orders_write
from engine.store.orders_write import Advance
from engine.store.rejected import Rejected, isolable


class OrdersWriter:
    def __init__(
        self, pool: asyncpg.Pool, queries: Mapping[str, str], *, guess_new_pages: bool = True
    ) -> None:
        self._pool = pool
        self._q = queries
        # Per shop: was the last page all new? Then so is the next one most likely (a
        # backfill): it is inserted without any lookup; a wrong guess fails on a unique key,
        # writes nothing and costs one statement.
        self._all_new: dict[str, bool] = {}
        self._guess_new = guess_new_pages

    async def write(
        self, shop_id: str, items: list[Any], advance: Advance
    ) -> tuple[Sequence[Mapping[str, int]], list[Rejected]]:
        """The counts of each statement that stored a part of the page, and what was set
        aside."""
        if not orders_write.without_keys(items):
            try:
                page = orders_write.prepare(items)
                guess = self._guess_new and self._all_new.get(shop_id, False)
                async with self._pool.acquire() as conn:
                    row = None
                    if guess:
                        row = await orders_write.insert_page(conn, self._q, shop_id, page, advance)
                    if row is None:
                        row = await orders_write.write_page(conn, self._q, shop_id, page, advance)
                self._all_new[shop_id] = 0 < row["orders"] == row["orders_inserted"]
                return [row], []
            except Exception as exc:
                if not isolable(exc):
                    raise
        return await isolation.write_orders(self._pool, self._q, shop_id, items, advance)
