"""The reconciler's claims limited to the shops of apps this process owns."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncpg

from engine.store.outbox import Task
from engine.store.store import Store

__all__ = ["OwnedShopsStore"]


class OwnedShopsStore(Store):
    """The reconciler's claims, limited to shops of apps this process owns (plus tasks of no
    shop, which never call Temu): a task's Temu calls then go through the one pacer of its
    app, the owner's."""

    def __init__(self, pool: asyncpg.Pool, shops: Callable[[], Sequence[str]]) -> None:
        super().__init__(pool)
        self._shops = shops

    async def claim(
        self,
        kinds: Sequence[str],
        *,
        limit: int,
        lease_s: float,
        owner: str,
        shop_ids: Sequence[str] | None = None,
    ) -> list[Task]:
        shops = list(self._shops()) if shop_ids is None else list(shop_ids)
        return await super().claim(kinds, limit=limit, lease_s=lease_s, owner=owner, shop_ids=shops)
