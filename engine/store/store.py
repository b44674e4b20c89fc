"""The only code that talks to the temu-sync tables. SQL lives in ``sql/queries/``.

The returns writers send a whole page as one jsonb parameter to one statement: extraction of
the typed columns, de-duplication, the unchanged-row filter, the upsert, the ``changes`` rows
and the cursor advance all happen server-side, in one round trip and one implicit transaction.
The orders writer (orders_write.py) first compares content hashes, so a quiet page is a read
and only changed orders travel.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from engine.store import isolation
from engine.store.orders_store import GUESS_AFTER, OrdersWriter
from engine.store.queries import default_queries
from engine.store.rejected import Rejected, isolable, json_key

Item = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DiffCounts:
    """Outcome of one write, over distinct keys (a key repeated in one batch counts once).

    ``skipped`` counts records without their key (not stored); ``rejected`` the records set
    aside in ``rejected_records`` (those without a key included)."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    rejected: int = 0

    @property
    def written(self) -> int:
        return self.inserted + self.updated

    def __add__(self, other: DiffCounts) -> DiffCounts:
        return DiffCounts(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.skipped + other.skipped,
            self.rejected + other.rejected,
        )


@dataclass(frozen=True, slots=True)
class CursorAdvance:
    """Where a stream's cursor moves when the page it comes with is stored."""

    stream: str
    kind: str
    position: datetime

    def __post_init__(self) -> None:
        # A naive datetime would be read in the server's time zone: refuse the ambiguity.
        if self.position.tzinfo is None:
            raise ValueError("CursorAdvance.position must be timezone-aware")


@dataclass(frozen=True, slots=True)
class ReturnsWrite:
    counts: DiffCounts
    changed_sns: list[str]  # inserted or updated: their lines and logistics need fetching


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
class OcTokens:
    client_id: str
    refresh_token: str
    access_token: str | None
    expires_at: datetime | None
    updated_at: datetime


def _counts(total: int, inserted: int, updated: int, skipped: int, rejected: int = 0) -> DiffCounts:
    return DiffCounts(inserted, updated, total - inserted - updated, skipped, rejected)


def _summed(
    rows: Sequence[Any], total: str, inserted: str, updated: str, skipped: str
) -> tuple[int, int, int, int]:
    return (
        sum(r[total] for r in rows),
        sum(r[inserted] for r in rows),
        sum(r[updated] for r in rows),
        sum(r[skipped] for r in rows),
    )


def _order_counts(rows: Sequence[Any], rejected: Sequence[Rejected]) -> dict[str, DiffCounts]:
    return {
        "order": _counts(
            *_summed(rows, "orders", "orders_inserted", "orders_updated", "orders_skipped"),
            _rejected_of(rejected, "order"),
        ),
        "order_line": _counts(
            *_summed(rows, "lines", "lines_inserted", "lines_updated", "lines_skipped"),
            _rejected_of(rejected, "order_line"),
        ),
    }


def _returns_without_keys(items: Sequence[Item], lines: Sequence[Item]) -> bool:
    return any(json_key(i, "parentAfterSalesSn") is None for i in items) or any(
        json_key(line, "afterSalesSn") is None for line in lines
    )


def _logistics_info(result: Mapping[str, Any]) -> Any:
    info = result.get("logisticsInfoList")
    return info if info is not None else []


def _return_counts(
    rows: Sequence[asyncpg.Record],
    line_rows: Sequence[asyncpg.Record],
    rejected: Sequence[Rejected],
) -> dict[str, DiffCounts]:
    return {
        "return": _counts(
            *_summed(rows, "total", "inserted", "updated", "skipped"),
            _rejected_of(rejected, "return"),
        ),
        "return_line": _counts(
            *_summed(line_rows, "total", "inserted", "updated", "skipped"),
            _rejected_of(rejected, "return_line"),
        ),
    }


def _rejected_of(rejected: Sequence[Rejected], entity: str) -> int:
    return sum(1 for r in rejected if r.entity == entity)


def _advance_args(advance: CursorAdvance | None) -> tuple[str | None, str | None, Any]:
    if advance is None:
        return None, None, None
    return advance.stream, advance.kind, advance.position


class Store:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        queries: Mapping[str, str] | None = None,
        guess_new_after: int | None = GUESS_AFTER,
    ) -> None:
        self._pool = pool
        self._q = default_queries() if queries is None else queries
        self._orders = OrdersWriter(pool, self._q, guess_new_after=guess_new_after)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # -- diff writers ---------------------------------------------------------------------------

    async def write_orders(
        self,
        shop_id: str,
        page_items: Sequence[Item],
        *,
        advance: CursorAdvance | None = None,
    ) -> dict[str, DiffCounts]:
        """Stores items of ``bg.order.list.v2.get`` (``{"parentOrderMap", "orderList"}``):
        compared by content hash first, only new or changed orders sent (orders_write.py).
        ``guess_new_after`` (constructor): after so many all-new pages in a row, insert the
        next one without lookups (orders_store.py; None: never).

        Returns ``{"order": ..., "order_line": ...}``. Lines of an item without a
        ``parentOrderSn`` are not stored (they would have no parent)."""
        rows, rejected = await self._orders.write(shop_id, list(page_items), _advance_args(advance))
        return _order_counts(rows, rejected)

    async def write_returns(
        self,
        shop_id: str,
        items: Sequence[Item],
        *,
        advance: CursorAdvance | None = None,
    ) -> ReturnsWrite:
        """Stores elements of ``result.data`` of the parent returns list."""
        row = await self._pool.fetchrow(
            self._q["write_returns"], shop_id, list(items), *_advance_args(advance)
        )
        assert row is not None
        counts = _counts(row["total"], row["inserted"], row["updated"], row["skipped"])
        return ReturnsWrite(counts, list(row["changed_sns"]))

    async def returns_changed(self, shop_id: str, items: Sequence[Item]) -> list[str]:
        """Keys of the returns in ``items`` that are new or differ from the stored row."""
        rows = await self._pool.fetch(self._q["returns_changed"], shop_id, list(items))
        return [r["sn"] for r in rows]

    async def write_returns_bundle(
        self,
        shop_id: str,
        items: Sequence[Item],
        *,
        lines: Sequence[Item],
        logistics: Mapping[str, Mapping[str, Any]],
        advance: CursorAdvance | None = None,
    ) -> dict[str, DiffCounts]:
        """Returns with their lines and reverse logistics (and the cursor) in ONE transaction.

        Lines and logistics go first: if the transaction is lost, the returns still look
        changed on the next read and their lines are fetched again."""
        item_list, line_list = list(items), list(lines)
        infos = {sn: _logistics_info(result) for sn, result in logistics.items()}
        if not _returns_without_keys(item_list, line_list):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    line_row = await conn.fetchrow(
                        self._q["write_return_lines"], shop_id, line_list
                    )
                    for sn, info in infos.items():
                        await conn.fetchrow(self._q["write_return_logistics"], shop_id, sn, info)
                    row = await conn.fetchrow(
                        self._q["write_returns"], shop_id, item_list, *_advance_args(advance)
                    )
                assert row is not None and line_row is not None
                return _return_counts([row], [line_row], [])
            except Exception as exc:
                if not isolable(exc):
                    raise
        rows, line_rows, rejected = await isolation.write_returns_bundle(
            self._pool, self._q, shop_id, item_list, line_list, infos, _advance_args(advance)
        )
        return _return_counts(rows, line_rows, rejected)

    async def write_return_lines(self, shop_id: str, items: Sequence[Item]) -> DiffCounts:
        """Stores elements of ``result.data`` of ``bg.aftersales.aftersales.list.get``."""
        row = await self._pool.fetchrow(self._q["write_return_lines"], shop_id, list(items))
        assert row is not None
        return _counts(row["total"], row["inserted"], row["updated"], row["skipped"])

    async def write_return_logistics(
        self, shop_id: str, parent_after_sales_sn: str, result: Mapping[str, Any]
    ) -> bool:
        """Stores ``result.logisticsInfoList`` of ``bg.aftersales.parentreturnorder.get``.

        Returns True when the stored logistics changed (or were new)."""
        info = result.get("logisticsInfoList")
        row = await self._pool.fetchrow(
            self._q["write_return_logistics"],
            shop_id,
            parent_after_sales_sn,
            info if info is not None else [],
        )
        return row is not None

    async def get_return_logistics(
        self, shop_id: str, parent_after_sales_sn: str
    ) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(
            self._q["get_return_logistics"], shop_id, parent_after_sales_sn
        )
        return dict(row) if row is not None else None

    async def returns_awaiting_label(self, shop_id: str | None = None) -> list[dict[str, Any]]:
        """Returns in status 8 offering operation 10 (upload return label)."""
        rows = await self._pool.fetch(self._q["returns_awaiting_label"], shop_id)
        return [dict(r) for r in rows]

    # -- cursors and sync status ----------------------------------------------------------------

    async def get_cursor(self, shop_id: str, stream: str, kind: str) -> datetime | None:
        value: datetime | None = await self._pool.fetchval(
            self._q["get_cursor"], shop_id, stream, kind
        )
        return value

    async def set_cursor(self, shop_id: str, stream: str, kind: str, position: datetime) -> None:
        """Sets the cursor unconditionally (it may move backwards: operator resets)."""
        await self._pool.execute(self._q["set_cursor"], shop_id, stream, kind, position)

    async def advance_cursor(self, shop_id: str, advance: CursorAdvance) -> datetime:
        """Moves the cursor without rows (empty window); never backwards for incremental.

        Returns the stored position."""
        value: datetime = await self._pool.fetchval(
            self._q["advance_cursor"], shop_id, advance.stream, advance.kind, advance.position
        )
        return value

    async def record_success(self, shop_id: str, stream: str, kind: str = "incremental") -> None:
        await self._pool.execute(self._q["record_success"], shop_id, stream, kind)

    async def record_error(self, shop_id: str, stream: str, kind: str, message: str) -> None:
        await self._pool.execute(self._q["record_error"], shop_id, stream, kind, message)

    async def sync_status(
        self, shops: Sequence[str] = (), streams: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Per shop, stream and kind: position (also as ``cursor``), lag_s, last_success_at,
        last_error, last_error_at, failing (an error newer than the last success) and
        configured. Every pair of ``shops`` x ``streams`` gets at least an incremental row."""
        rows = await self._pool.fetch(self._q["sync_status"], list(shops), list(streams))
        return [dict(r) for r in rows]

    # -- outbox ---------------------------------------------------------------------------------

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
            self._q["fail"], task_id, error, max_attempts, backoff_s, owner
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

    # -- Orange Connex tokens -------------------------------------------------------------------

    async def get_oc_tokens(self, client_id: str) -> OcTokens | None:
        r = await self._pool.fetchrow(self._q["get_oc_tokens"], client_id)
        if r is None:
            return None
        return OcTokens(
            r["client_id"],
            r["refresh_token"],
            r["access_token"],
            r["expires_at"],
            r["updated_at"],
        )

    @contextlib.asynccontextmanager
    async def oc_token_lock(self, client_id: str) -> AsyncIterator[None]:
        """A session advisory lock per OC client id, across every process on this database."""
        async with self._pool.acquire() as conn:
            key = f"temu_sync.oc_tokens:{client_id}"
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)

    async def save_oc_tokens(
        self,
        client_id: str,
        refresh_token: str,
        access_token: str | None,
        expires_at: datetime | None,
    ) -> None:
        await self._pool.execute(
            self._q["save_oc_tokens"], client_id, refresh_token, access_token, expires_at
        )
