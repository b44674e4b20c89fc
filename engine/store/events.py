"""Durable storage of Temu webhook events (table ``webhook_events``, SQL in
``sql/queries/webhook_events.sql``).

The receiver inserts under a short deadline (Temu counts an answer slower than 500 ms as a
failed delivery); the consumer claims, processes and marks rows afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from engine.store.pool import pg_text
from engine.store.queries import default_queries
from engine.waits import within

# The insert's deadline on the request path: well inside Temu's 500 ms, leaving room for
# verification and the answer's way back.
INSERT_TIMEOUT_S = 0.3


class EventRecord(Protocol):
    """What the store needs of a received event (``engine.temu.webhooks.Event`` is one); a
    Protocol, so the store does not depend on the Temu client's wire module."""

    @property
    def event_key(self) -> str: ...

    @property
    def code(self) -> str: ...

    @property
    def app_key(self) -> str: ...

    @property
    def timestamp_ms(self) -> int | None: ...

    @property
    def mall_id(self) -> int | None: ...

    @property
    def parent_order_sn(self) -> str | None: ...

    @property
    def order_sn(self) -> str | None: ...

    @property
    def parent_after_sales_sn(self) -> str | None: ...

    @property
    def update_time(self) -> int | None: ...

    @property
    def raw(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    app_key: str
    shop_id: str
    mall_id: int | None
    code: str
    parent_order_sn: str | None
    order_sn: str | None
    parent_after_sales_sn: str | None
    update_time: datetime | None
    payload: dict[str, Any]
    received_at: datetime
    attempts: int  # including the current claim

    @property
    def update_time_s(self) -> int | None:
        return None if self.update_time is None else int(self.update_time.timestamp())


@dataclass(frozen=True, slots=True)
class Processed:
    id: int
    received_at: datetime
    processed_at: datetime


def _ts(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


class EventStore:
    def __init__(self, pool: asyncpg.Pool, *, queries: Mapping[str, str] | None = None) -> None:
        self._pool = pool
        self._q = default_queries() if queries is None else queries

    async def insert(
        self, event: EventRecord, shop_id: str, *, timeout_s: float = INSERT_TIMEOUT_S
    ) -> bool:
        """Stores ``event`` for ``shop_id``; False when it was already stored (a duplicate).

        Raises TimeoutError or a database error when it could not be stored in time."""
        return await self.insert_for(event, [shop_id], timeout_s=timeout_s)

    async def insert_for(
        self, event: EventRecord, shop_ids: Sequence[str], *, timeout_s: float = INSERT_TIMEOUT_S
    ) -> bool:
        """Stores ``event`` once for each of ``shop_ids``, in one statement; False when it was
        already stored. An event for several shops (no mallId, an app of several shops) gets
        a key per shop: a re-send still finds each of them."""
        if len(shop_ids) == 1:
            keys = [event.event_key]
        else:
            keys = [f"{event.event_key}/{shop}" for shop in shop_ids]
        sent = None if event.timestamp_ms is None else _ts(event.timestamp_ms // 1000)
        args = (
            keys,
            event.app_key,
            list(shop_ids),
            event.mall_id,
            pg_text(event.code),
            pg_text(event.parent_order_sn),
            pg_text(event.order_sn),
            pg_text(event.parent_after_sales_sn),
            _ts(event.update_time),
            sent,
            event.raw,
        )
        # The deadline covers waiting for a pooled connection too, not only the statement, and
        # holds against a silent server (engine/waits.py). An insert that commits after the
        # deadline is found by the key of Temu's re-send.
        new_ids = await within(self._pool.fetch(self._q["insert_webhook_event"], *args), timeout_s)
        return bool(new_ids)

    async def claim(
        self, *, limit: int, lease_s: float, shop_ids: Sequence[str] | None = None
    ) -> list[StoredEvent]:
        shops = None if shop_ids is None else list(shop_ids)
        rows = await self._pool.fetch(self._q["claim_webhook_events"], limit, lease_s, shops)
        events = [StoredEvent(**dict(r)) for r in rows]
        events.sort(key=lambda e: e.id)
        return events

    async def mark_processed(self, ids: Sequence[int], outcome: str) -> list[Processed]:
        rows = await self._pool.fetch(self._q["mark_webhook_events_processed"], list(ids), outcome)
        return [Processed(r["id"], r["received_at"], r["processed_at"]) for r in rows]

    async def fail(
        self, ids: Sequence[int], error: str, *, backoff_s: float, max_attempts: int
    ) -> list[int]:
        """Schedules a retry; returns the ids given up on (their attempts ran out)."""
        rows = await self._pool.fetch(
            self._q["fail_webhook_events"],
            list(ids),
            pg_text(error[:2000]),
            backoff_s,
            max_attempts,
        )
        return [r["id"] for r in rows if r["gave_up"]]

    async def release(self, ids: Sequence[int]) -> None:
        """Unclaims events this process may no longer read (its app lease went elsewhere)."""
        await self._pool.execute(self._q["release_webhook_events"], list(ids))

    async def prune(self, older_than_days: int) -> int:
        """Deletes processed events older than that; returns how many."""
        status = await self._pool.execute(self._q["prune_webhook_events"], older_than_days)
        return int(status.split()[-1])

    async def summary(self) -> dict[str, int]:
        rows = await self._pool.fetch(self._q["webhook_events_summary"])
        out = dict.fromkeys(("pending", "read", "not_found", "gave_up"), 0)
        out.update({r["outcome"]: r["n"] for r in rows})
        return out
