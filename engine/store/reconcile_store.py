"""The reconciler's own queries (``sql/queries/reconcile.sql``) on top of the shared pool.

Kept apart from ``Store`` so the reconciler's bookkeeping (cursor over ``changes``, planning
statements, durable task progress) evolves without touching the sync's writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from engine.store.outbox import Outbox
from engine.store.pool import pg_text

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PlannedPushes:
    last_change_id: int | None  # None: no new change rows
    changes_read: int
    cancels: int
    trackings: int


@dataclass(frozen=True, slots=True)
class ReturnInfo:
    shop_id: str
    parent_after_sales_sn: str
    parent_order_sn: str | None
    status: int | None
    available_operations: tuple[int, ...]
    return_delivery_type: int | None
    create_at: int | None  # Unix seconds
    region_id: int | None
    update_at: int | None = None  # Unix seconds, as Temu last showed it

    @property
    def awaiting_label(self) -> bool:
        return self.status == 8 and 10 in self.available_operations


class ReconcileStore(Outbox):
    """The reconciler's planning over ``changes`` and its reads of returns (and the outbox)."""

    # -- planning -------------------------------------------------------------------------------

    async def cursor(self, name: str) -> int:
        value: int | None = await self._pool.fetchval(self._q["reconcile_cursor_get"], name)
        return value or 0

    async def plan_label_tasks(self, kind: str, key_prefix: str) -> int:
        row = await self._pool.fetchrow(self._q["reconcile_plan_label_tasks"], kind, key_prefix)
        assert row is not None
        return int(row["queued"])

    async def plan_oc_pushes(
        self, cursor_name: str, *, batch: int, overlap_s: float
    ) -> PlannedPushes:
        """Plans one batch of changes after the cursor and advances it, in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            position: int = await conn.fetchval(self._q["reconcile_cursor_get"], cursor_name) or 0
            row = await conn.fetchrow(
                self._q["reconcile_plan_oc_pushes"], position, batch, overlap_s
            )
            assert row is not None
            last = row["last_id"]
            if last is not None:
                await conn.execute(self._q["reconcile_cursor_set"], cursor_name, last)
        return PlannedPushes(last, int(row["read"]), int(row["cancels"]), int(row["trackings"]))

    # -- returns --------------------------------------------------------------------------------

    async def find_returns(self, sn: str, shop_id: str | None = None) -> list[ReturnInfo]:
        rows = await self._pool.fetch(self._q["reconcile_return"], pg_text(sn), shop_id)
        return [
            ReturnInfo(
                shop_id=r["shop_id"],
                parent_after_sales_sn=r["parent_after_sales_sn"],
                parent_order_sn=r["parent_order_sn"],
                status=r["status"],
                available_operations=tuple(r["available_operations"] or ()),
                return_delivery_type=r["return_delivery_type"],
                create_at=r["create_at"],
                region_id=r["region_id"],
                update_at=r["update_at"],
            )
            for r in rows
        ]
