"""The reconciler's own queries (``sql/queries/reconcile.sql``) on top of the shared pool.

Kept apart from ``Store`` so the reconciler's bookkeeping (cursor over ``changes``, planning
statements, durable task progress) evolves without touching the sync's writer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from engine.store.pool import pg_text
from engine.store.queries import default_queries

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


@dataclass(frozen=True, slots=True)
class LockedTask:
    id: int
    kind: str
    state: str
    attempts: int
    payload: dict[str, Any]
    updated_at: int | None = None  # Unix seconds


class ReconcileStore:
    def __init__(self, pool: asyncpg.Pool, *, queries: Mapping[str, str] | None = None) -> None:
        self._pool = pool
        self._q = default_queries() if queries is None else queries

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

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

    async def enqueue_tracking(
        self, shop_id: str, sn: str, tracking: str, carrier_name: str | None, message_id: str
    ) -> bool:
        row = await self._pool.fetchrow(
            self._q["reconcile_enqueue_tracking"], shop_id, sn, tracking, carrier_name, message_id
        )
        return row is not None and int(row["queued"]) > 0

    async def blocked(self, prefix: str) -> tuple[int, str | None, str | None]:
        """(count, latest note, its dedupe key) of pending tasks whose note starts with
        ``prefix``: the executor's mark for a task waiting on a configuration problem."""
        row = await self._pool.fetchrow(self._q["reconcile_blocked"], prefix)
        assert row is not None
        return int(row["n"]), row["latest_error"], row["latest_key"]

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

    # -- tasks ----------------------------------------------------------------------------------

    async def upsert_task(
        self,
        kind: str,
        dedupe_key: str,
        payload: dict[str, Any],
        shop_id: str | None,
        *,
        decide: Callable[[LockedTask], tuple[dict[str, Any] | None, T]],
    ) -> T | None:
        """Inserts the task, or lets ``decide(existing) -> patch | None`` requeue it with a patch.

        Runs under a row lock so a concurrent claim sees either the old or the new payload.
        Returns ``decide``'s verdict for an existing task, None for a new one.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(self._q["reconcile_task_for_update"], dedupe_key)
            if row is None:
                await conn.fetchrow(
                    self._q["reconcile_insert_task"], kind, dedupe_key, payload, shop_id
                )
                return None
            existing = LockedTask(
                row["id"],
                row["kind"],
                row["state"],
                row["attempts"],
                dict(row["payload"] or {}),
                row["updated_at"],
            )
            patch, verdict = decide(existing)
            if patch is not None:
                await conn.fetchrow(self._q["reconcile_requeue"], existing.id, patch)
            return verdict

    async def patch_running(
        self, task_id: int, patch: dict[str, Any], *, owner: str, cover_s: float
    ) -> bool:
        row = await self._pool.fetchrow(
            self._q["reconcile_patch_running"], task_id, patch, owner, cover_s
        )
        return row is not None

    async def defer(
        self,
        task_id: int,
        note: str | None,
        *,
        delay_s: float,
        owner: str,
        patch: dict[str, Any] | None = None,
    ) -> bool:
        row = await self._pool.fetchrow(
            self._q["reconcile_defer"], task_id, pg_text(note), delay_s, patch or {}, owner
        )
        return row is not None
