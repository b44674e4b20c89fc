"""The orders page write with its careful path: the fast path (orders_write.py) for pages
whose records all have their keys, the isolating one (isolation.py) for the rest and for pages
Postgres refuses on the data."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from engine.errors import describe
from engine.store import isolation, orders_write
from engine.store.orders_write import Advance
from engine.store.rejected import Rejected, isolable

log = logging.getLogger(__name__)

GUESS_AFTER = 3  # all-new pages in a row


class OrdersWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Mapping[str, str],
        *,
        guess_new_after: int | None = GUESS_AFTER,
    ) -> None:
        self._pool = pool
        self._q = queries
        # Per shop: how many pages in a row were all new. From GUESS_AFTER on, the next one
        # most likely is too (a backfill): it is inserted without any lookup. A wrong guess
        # fails on a unique key, writes nothing, costs one statement and leaves an ERROR line
        # in the server's log, so one page of new orders in an incremental pass is no reason.
        self._all_new: dict[str, int] = {}
        self._guess_after = guess_new_after  # None: never guess

    async def write(
        self, shop_id: str, items: list[Any], advance: Advance
    ) -> tuple[Sequence[Mapping[str, int]], list[Rejected]]:
        """The counts of each statement that stored a part of the page, and what was set
        aside."""
        try:
            page: orders_write.OrderPage | None = orders_write.prepare(items)
        except Exception as exc:
            if not isolable(exc):
                raise
            _falling_back(shop_id, exc)
            page = None  # not serialisable as a whole: the careful path finds the record
        if page is not None and page.complete:
            try:
                after = self._guess_after
                guess = after is not None and self._all_new.get(shop_id, 0) >= after
                async with self._pool.acquire() as conn:
                    row = None
                    if guess:
                        row = await orders_write.insert_page(conn, self._q, shop_id, page, advance)
                    if row is None:
                        row = await orders_write.write_page(conn, self._q, shop_id, page, advance)
                new = 0 < row["orders"] == row["orders_inserted"]
                self._all_new[shop_id] = self._all_new.get(shop_id, 0) + 1 if new else 0
                return [row], []
            except Exception as exc:
                if not isolable(exc):
                    raise
                _falling_back(shop_id, exc)
        return await isolation.write_orders(self._pool, self._q, shop_id, items, advance)


def _falling_back(shop_id: str, exc: BaseException) -> None:
    """Only data errors come here (rejected.isolable): the page is written record by record,
    and the records Postgres refuses are set aside."""
    log.info(
        "orders page refused on its data (%s): written record by record",
        describe(exc),
        extra={"shop": shop_id},
    )
