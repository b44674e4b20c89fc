"""What every stream adapter of one shop shares: its dependencies and how it books a write."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from engine.counters import RunCounters
from engine.store.rejected import json_key
from engine.store.store import DiffCounts, Store
from engine.temu.api import TemuShopApi
from engine.temu.limiter import Lane

log = logging.getLogger(__name__)


def key_as_sent(value: Any) -> str | None:
    """A record's key as the store keys it (json_key: a number is its JSON text, so
    70000000001 is "70000000001"), a string exactly as Temu sent it (a U+0000 kept): the
    pager counts records by it, and Temu is asked about the record with it."""
    if isinstance(value, str):
        return value or None
    return json_key(value)


class ShopStream:
    stream = ""
    entity = ""  # what one record of the stream's list is, in changes and rejected_records
    max_page_size = 100  # Temu's maximum for the stream's list API; the default page size

    def __init__(
        self,
        shop_id: str,
        api: TemuShopApi,
        store: Store,
        counters: RunCounters,
        page_size: int | None = None,
    ) -> None:
        self.shop_id = shop_id
        self.page_size = page_size or self.max_page_size
        self._api = api
        self._store = store
        self._counters = counters

    async def after_walk(self, lane: Lane, started: datetime) -> None:
        """Work a stream does after each successful walk of its range (none by default)."""

    async def set_aside(self, elements: Sequence[Any]) -> None:
        """Elements of the list that are not records (a string, a number, null): set aside in
        rejected_records and counted in the run's ``rejected``."""
        await self._set_aside(self.entity, elements)

    async def _set_aside(self, entity: str, elements: Sequence[Any]) -> None:
        self._counters.note_rejected(await self._store.set_aside(self.shop_id, entity, elements))

    def _book(self, counts: Mapping[str, DiffCounts], keys: Mapping[str, str]) -> None:
        """Adds the rows written to the run's counters; records without their key cannot be
        stored (nothing identifies them), so their count is logged with the key they lack."""
        for entity, c in counts.items():
            self._counters.add_rows(entity, c.inserted, c.updated, c.unchanged)
            self._counters.note_rejected(c.rejected_ids)
            if c.skipped:
                log.warning(
                    "shop %s: skipped %d %s record(s) without %s (not stored)",
                    self.shop_id,
                    c.skipped,
                    entity.replace("_", " "),
                    keys.get(entity, "a key"),
                    extra={"shop": self.shop_id},
                )
