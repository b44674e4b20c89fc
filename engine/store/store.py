"""The only code that talks to the temu-sync tables. SQL lives in ``sql/queries/``.

The returns writers send a whole page as one jsonb parameter to one statement: extraction of
the typed columns, de-duplication, the unchanged-row filter, the upsert, the ``changes`` rows
and the cursor advance all happen server-side, in one round trip and one implicit transaction.
The orders writer (orders_write.py) first compares content hashes, so a quiet page is a read
and only changed orders travel.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from engine.store import isolation
from engine.store.orders_store import GUESS_AFTER, OrdersWriter
from engine.store.outbox import Outbox
from engine.store.pool import holds_session_state, pg_text, pg_texts
from engine.store.rejected import (
    Rejected,
    isolable,
    json_key,
    not_objects,
    rejected_ids,
    save_rejected,
)

Item = Mapping[str, Any]

# Set while a task holds an OC token lock (see ``Store.oc_token_lock``); a ContextVar, so only
# that task (and tasks it starts) sees the connection.
_TOKEN_LOCK_CONN: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "temu_sync_token_lock_conn", default=None
)
_TOKEN_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"


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
    # Who was set aside (rejected.rejected_ids), for a run's count of distinct records.
    rejected_ids: frozenset[str] = field(default=frozenset(), compare=False)

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
            self.rejected_ids | other.rejected_ids,
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
class OcTokens:
    client_id: str
    refresh_token: str
    access_token: str | None
    expires_at: datetime | None
    updated_at: datetime


def _counts(
    total: int, inserted: int, updated: int, skipped: int, rejected: frozenset[str] = frozenset()
) -> DiffCounts:
    return DiffCounts(
        inserted, updated, total - inserted - updated, skipped, len(rejected), rejected
    )


def _summed(
    rows: Sequence[Any], total: str, inserted: str, updated: str, skipped: str
) -> tuple[int, int, int, int]:
    return (
        sum(r[total] for r in rows),
        sum(r[inserted] for r in rows),
        sum(r[updated] for r in rows),
        sum(r[skipped] for r in rows),
    )


def _order_counts(
    shop_id: str, rows: Sequence[Any], rejected: Sequence[Rejected]
) -> dict[str, DiffCounts]:
    return {
        "order": _counts(
            *_summed(rows, "orders", "orders_inserted", "orders_updated", "orders_skipped"),
            rejected_ids(shop_id, rejected, "order"),
        ),
        "order_line": _counts(
            *_summed(rows, "lines", "lines_inserted", "lines_updated", "lines_skipped"),
            rejected_ids(shop_id, rejected, "order_line"),
        ),
    }


def _returns_without_keys(items: Sequence[Item], lines: Sequence[Item]) -> bool:
    return any(json_key(i, "parentAfterSalesSn") is None for i in items) or any(
        json_key(line, "afterSalesSn") is None for line in lines
    )


def _logistics_info(result: Any) -> Any:
    """The answer's logisticsInfoList as sent ([] when absent; an answer that is not even an
    object is kept whole: the SQL reads only arrays into typed columns)."""
    if not isinstance(result, Mapping):
        return [] if result is None else result
    info = result.get("logisticsInfoList")
    return info if info is not None else []


def _return_counts(
    shop_id: str,
    rows: Sequence[asyncpg.Record],
    line_rows: Sequence[asyncpg.Record],
    rejected: Sequence[Rejected],
) -> dict[str, DiffCounts]:
    return {
        "return": _counts(
            *_summed(rows, "total", "inserted", "updated", "skipped"),
            rejected_ids(shop_id, rejected, "return"),
        ),
        "return_line": _counts(
            *_summed(line_rows, "total", "inserted", "updated", "skipped"),
            rejected_ids(shop_id, rejected, "return_line"),
        ),
    }


def _advance_args(advance: CursorAdvance | None) -> tuple[str | None, str | None, Any]:
    if advance is None:
        return None, None, None
    return advance.stream, advance.kind, advance.position


class Store(Outbox):
    """The sync side's tables: diff writers, cursors, sync state, OC tokens (and the outbox)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        queries: Mapping[str, str] | None = None,
        guess_new_after: int | None = GUESS_AFTER,
    ) -> None:
        super().__init__(pool, queries=queries)
        self._orders = OrdersWriter(pool, self._q, guess_new_after=guess_new_after)

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
        return _order_counts(shop_id, rows, rejected)

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
        # Keyed as Postgres stores the return (a U+0000 in its key reads as U+FFFD).
        infos = dict(
            zip(pg_texts(logistics), map(_logistics_info, logistics.values()), strict=True)
        )
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
                return _return_counts(shop_id, [row], [line_row], [])
            except Exception as exc:
                if not isolable(exc):
                    raise
        rows, line_rows, rejected = await isolation.write_returns_bundle(
            self._pool, self._q, shop_id, item_list, line_list, infos, _advance_args(advance)
        )
        return _return_counts(shop_id, rows, line_rows, rejected)

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
        row = await self._pool.fetchrow(
            self._q["write_return_logistics"],
            shop_id,
            parent_after_sales_sn,
            _logistics_info(result),
        )
        return row is not None

    async def want_logistics(self, shop_id: str, sns: Sequence[str], reason: str) -> None:
        """These returns' logistics could not be read: read them again at a later pass."""
        if sns:
            await self._pool.execute(
                self._q["want_logistics"], shop_id, pg_texts(sns), pg_text(reason[:2000])
            )

    async def logistics_due(
        self, shop_id: str, limit: int, *, before: datetime
    ) -> list[tuple[str, int]]:
        """(parent_after_sales_sn, attempts so far) of the returns to read again now, among
        those pending since before ``before``."""
        rows = await self._pool.fetch(self._q["logistics_due"], shop_id, limit, before)
        return [(r["parent_after_sales_sn"], r["attempts"]) for r in rows]

    async def write_reread_logistics(
        self, shop_id: str, sn: str, result: Mapping[str, Any]
    ) -> bool:
        """Stores logistics read again (no longer pending); a change is logged as a change of
        its return. True when the stored logistics changed."""
        info = _logistics_info(result)
        async with self._pool.acquire() as conn, conn.transaction():
            changed = await conn.fetchrow(self._q["write_return_logistics"], shop_id, sn, info)
            if changed is not None:
                await conn.execute(self._q["logistics_reread_change"], shop_id, sn)
        return changed is not None

    async def logistics_later(self, shop_id: str, sn: str, error: str, delay_s: float) -> None:
        await self._pool.execute(
            self._q["logistics_later"], shop_id, sn, pg_text(error[:2000]), delay_s
        )

    async def set_aside(self, shop_id: str, entity: str, elements: Sequence[Any]) -> frozenset[str]:
        """List elements that are not records at all, into rejected_records; who they are
        (rejected.rejected_ids)."""
        rejected = not_objects(entity, elements)
        async with self._pool.acquire() as conn:
            await save_rejected(conn, self._q["save_rejected"], shop_id, rejected)
        return rejected_ids(shop_id, rejected, entity)

    async def logistics_pending(self, shop_id: str | None = None) -> int:
        count: int = await self._pool.fetchval(self._q["logistics_pending_count"], shop_id)
        return count

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

    async def record_error(
        self,
        shop_id: str,
        stream: str,
        kind: str,
        message: str,
        *,
        error_class: str | None = None,
        backoff: Callable[[int], float] | None = None,
    ) -> int:
        """Records a failed pass; with ``backoff`` (failures in a row -> seconds) the stream
        is also skipped until that long from now. Returns the failures in a row."""
        async with self._pool.acquire() as conn, conn.transaction():
            failures: int = await conn.fetchval(
                self._q["record_error"], shop_id, stream, kind, pg_text(message), error_class
            )
            if backoff is not None:
                await conn.execute(
                    self._q["set_retry_after"], shop_id, stream, kind, backoff(failures)
                )
        return failures

    async def note_inconsistent(self, shop_id: str, stream: str, kind: str) -> None:
        """A one-second window accepted although it never read consistently."""
        await self._pool.execute(self._q["note_inconsistent"], shop_id, stream, kind)

    async def backing_off(self, shop_id: str, stream: str, kind: str) -> dict[str, Any] | None:
        """``retry_after``, ``failures_in_row``, ``last_error_class``, ``last_error`` of a
        stream skipped until retry_after; None when it may run."""
        row = await self._pool.fetchrow(self._q["backing_off"], shop_id, stream, kind)
        return None if row is None else dict(row)

    async def sync_status(
        self, shops: Sequence[str] = (), streams: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Per shop, stream and kind: position (also as ``cursor``), lag_s, last_success_at,
        last_error, last_error_at, failing (an error newer than the last success),
        last_error_class, failures_in_row, retry_after (set while backing off),
        inconsistent_windows and configured. Every pair of ``shops`` x ``streams`` gets at
        least an incremental row."""
        rows = await self._pool.fetch(self._q["sync_status"], list(shops), list(streams))
        return [dict(r) for r in rows]

    async def rejected_counts(self) -> list[dict[str, Any]]:
        """Per shop and stream: ``records`` set aside in rejected_records, ``last_seen_at``."""
        return [dict(r) for r in await self._pool.fetch(self._q["rejected_counts"])]

    # -- Orange Connex tokens -------------------------------------------------------------------

    def _token_conn(self) -> Any:
        """The connection holding this task's OC token lock, else the pool: inside the lock the
        reads and writes ride on the lock's connection, so a refresh needs one connection, not
        two (with a small pool, the second could wait for good behind other holders)."""
        held = _TOKEN_LOCK_CONN.get()
        return self._pool if held is None else held

    async def get_oc_tokens(self, client_id: str) -> OcTokens | None:
        r = await self._token_conn().fetchrow(self._q["get_oc_tokens"], client_id)
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
        """A session advisory lock per OC client id, across every process on this database.

        The wait is bounded by the connection's ``lock_timeout`` (asyncpg raises, the caller
        retries later)."""
        async with self._pool.acquire() as conn:
            key = f"temu_sync.oc_tokens:{client_id}"
            # Released below; should the unlock not run (cancelled), the pool's full reset
            # releases it before another holder gets this connection.
            holds_session_state(conn)
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
            token = _TOKEN_LOCK_CONN.set(conn)
            try:
                yield
            finally:
                _TOKEN_LOCK_CONN.reset(token)
                await conn.execute(_TOKEN_UNLOCK, key)

    async def save_oc_tokens(
        self,
        client_id: str,
        refresh_token: str,
        access_token: str | None,
        expires_at: datetime | None,
    ) -> None:
        await self._token_conn().execute(
            self._q["save_oc_tokens"], client_id, refresh_token, access_token, expires_at
        )
