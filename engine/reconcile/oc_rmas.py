"""Orange Connex pieces the task kinds share: which RMAs are open, stable messageIds, and the
Postgres-backed TokenStore that keeps OC's rotated refresh token across restarts."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from engine.oc.client import Rma
from engine.oc.tokens import StoredTokens
from engine.store.store import Store

# OC does not document its RMA statuses (orange-connex-api.md); these end an RMA. ASSUMED:
# any other status (OPEN, CREATED, IN_TRANSIT, ...) is an RMA that can still change.
CLOSED_STATUSES = frozenset(
    {"CANCELLED", "CANCELED", "CLOSED", "COMPLETED", "COMPLETE", "FINISHED", "RECEIVED"}
)


def is_open(rma: Rma) -> bool:
    return rma.status.strip().upper() not in CLOSED_STATUSES


def open_rmas(rmas: Iterable[Rma]) -> list[Rma]:
    return sorted((r for r in rmas if is_open(r)), key=lambda r: r.order_number)


def push_message_id(task_message_id: str, order_number: str) -> str:
    """The messageId of one push of a task: derived, so every retry sends the same one.

    A task stores one messageId when it is created; a return with several open RMAs needs one
    per RMA, and deriving it (UUID5) keeps each stable without another write.
    """
    try:
        namespace = uuid.UUID(hex=task_message_id)
    except ValueError:
        namespace = uuid.uuid5(uuid.NAMESPACE_OID, task_message_id)
    return uuid.uuid5(namespace, order_number).hex


class PgTokenStore:
    """``engine.oc.tokens.TokenStore`` on the ``oc_tokens`` table."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, client_id: str) -> StoredTokens | None:
        row = await self._store.get_oc_tokens(client_id)
        if row is None:
            return None
        expires = row.expires_at.timestamp() if row.expires_at is not None else 0.0
        return StoredTokens(row.refresh_token, row.access_token or "", expires)

    async def save(
        self, client_id: str, refresh_token: str, access_token: str, expires_at: float
    ) -> None:
        when = datetime.fromtimestamp(expires_at, UTC) if expires_at > 0 else None
        await self._store.save_oc_tokens(client_id, refresh_token, access_token or None, when)

    def exclusive(self, client_id: str) -> AbstractAsyncContextManager[None]:
        return self._store.oc_token_lock(client_id)
