"""Every operation on the ``outbox`` table (``sql/queries/outbox.sql`` and the task statements
of ``reconcile.sql``): queueing, claiming under a lease, finishing, parking, deferring and the
status summaries.

One home, so the lease and dedupe rules are read in one place. ``Store`` (the sync side) and
``ReconcileStore`` (the reconciler's planning) both expose these operations by extending
``Outbox``; neither writes the table any other way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from engine.store.pool import pg_text
from engine.store.queries import default_queries

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Task:
    id: int
    kind: str
    dedupe_key: str
    shop_id: str | None
    payload: Any
    attempts: int  # including the current claim
    lease_expires_at: datetime
    owner: str
    last_error: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LockedTask:
    id: int
    kind: str
    state: str
    attempts: int
    payload: dict[str, Any]
    updated_at: int | None = None  # Unix seconds
    result: Any = None  # what the task's last finished run answered


class Outbox:
    def __init__(self, pool: asyncpg.Pool, *, queries: Mapping[str, str] | None = None) -> None:
        self._pool = pool
        self._q = default_queries() if queries is None else queries

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # -- queue and lease ----------------------------------------------------------------------

    async def enqueue(
        self, kind: str, dedupe_key: str, payload: Any, *, shop_id: str | None = None
    ) -> bool:
        """Queues a task unless one with ``dedupe_key`` exists (in any state). True if new."""
        row = await self._pool.fetchrow(
            self._q["enqueue"], kind, dedupe_key, {} if payload is None else payload, shop_id
        )
        return row is not None

    async def claim(
        self,
        kinds: Sequence[str],
        *,
        limit: int,
        lease_s: float,
        owner: str,
        shop_ids: Sequence[str] | None = None,
    ) -> list[Task]:
        """``shop_ids``: only tasks of these shops (or of no shop); None: any task."""
        shops = None if shop_ids is None else list(shop_ids)
        rows = await self._pool.fetch(self._q["claim"], list(kinds), limit, lease_s, owner, shops)
        tasks = [
            Task(
                id=r["id"],
                kind=r["kind"],
                dedupe_key=r["dedupe_key"],
                shop_id=r["shop_id"],
                payload=r["payload"],
                attempts=r["attempts"],
                lease_expires_at=r["lease_expires_at"],
                owner=r["owner"],
                last_error=r["last_error"],
                created_at=r["created_at"],
            )
            for r in rows
        ]
        tasks.sort(key=lambda t: t.id)
        return tasks

    async def complete(self, task_id: int, result: Any = None, *, owner: str | None = None) -> bool:
        """Marks a running task done. False when it was not running (or, with ``owner``, is
        no longer leased by that owner)."""
        row = await self._pool.fetchrow(self._q["complete"], task_id, result, owner)
        return row is not None

    async def fail(
        self,
        task_id: int,
        error: str,
        *,
        max_attempts: int,
        backoff_s: float,
        owner: str | None = None,
    ) -> str | None:
        """Returns the task's new state: 'pending' (retry after ``backoff_s``) or 'dead'
        (attempts reached ``max_attempts``); None when it was not running / not ours."""
        state: str | None = await self._pool.fetchval(
            self._q["fail"], task_id, pg_text(error), max_attempts, backoff_s, owner
        )
        return state

    async def outbox_tasks(self, state: str | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._pool.fetch(self._q["outbox_tasks"], state)]

    async def outbox_summary(self) -> dict[str, Any]:
        """Flat, for the status command: ``pending``, ``running``, ``done``, ``dead`` counts and
        the oldest dead task's ``oldest_dead_error``, ``oldest_dead_at``, ``oldest_dead_kind``,
        ``oldest_dead_key`` (None when there is none)."""
        async with self._pool.acquire() as conn:
            counts = await conn.fetch(self._q["outbox_counts"])
            dead = await conn.fetchrow(self._q["oldest_dead"])
        out: dict[str, Any] = dict.fromkeys(("pending", "running", "done", "dead"), 0)
        out.update({r["state"]: r["n"] for r in counts})
        out["oldest_dead_error"] = dead["last_error"] if dead else None
        out["oldest_dead_at"] = dead["updated_at"] if dead else None
        out["oldest_dead_kind"] = dead["kind"] if dead else None
        out["oldest_dead_key"] = dead["dedupe_key"] if dead else None
        return out

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
                row["result"],
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
