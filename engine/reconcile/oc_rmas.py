"""Orange Connex pieces the task kinds share: which RMAs are open, how long to wait for an RMA
OC does not have yet, stable messageIds, and the Postgres-backed TokenStore that keeps OC's
rotated refresh token across restarts."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.logs import add_secret
from engine.oc.client import OCClient
from engine.oc.errors import OCBusinessError
from engine.oc.tokens import StoredTokens
from engine.oc.wire import Rma
from engine.reconcile.tasks import Done, Outcome, Wait
from engine.store.store import Store

log = logging.getLogger(__name__)

REFUND_ONLY = 1  # afterSalesType


def open_rmas(rmas: Iterable[Rma]) -> list[Rma]:
    return sorted((r for r in rmas if r.is_open), key=lambda r: r.order_number)


def own_rmas(sn: str, rmas: Iterable[Rma]) -> list[Rma]:
    """The RMAs of return ``sn`` only (interface.md: an RMA is acted on only when its
    referenceNumber equals the return's parentAfterSalesSn). OC may match the query loosely
    and hand back other returns' RMAs too; those are logged and left alone."""
    own: list[Rma] = []
    foreign: list[str] = []
    for rma in rmas:
        if rma.reference_number == sn:  # exactly: " PAS-1 " is not PAS-1
            own.append(rma)
        else:
            foreign.append(f"{rma.order_number} (referenceNumber {rma.reference_number!r})")
    if foreign:
        log.warning(
            "OC answered the query for return %s with other returns' RMAs, left alone: %s",
            sn,
            ", ".join(foreign[:10]) + (", ..." if len(foreign) > 10 else ""),
        )
    return own


async def rmas_of(oc: OCClient, sn: str) -> list[Rma]:
    """OC's RMAs whose referenceNumber is ``sn``: the only ones any task may touch."""
    return own_rmas(sn, await oc.query_orders(sn))


@dataclass(frozen=True)
class RmaWait:
    """What a push task does when OC holds no RMA for the return: look again later, a bounded
    number of times (``max_polls``), so an RMA opened after Temu's event still hears of it."""

    delay: Callable[[int], float]
    max_polls: int

    def outcome(self, sn: str, polls: int, *, after_sales_type: object = None) -> Outcome:
        if after_sales_type == REFUND_ONLY:
            # No parcel comes back, so no RMA is coming: one look (made) is enough.
            return Done({"outcome": "no_rma", "polls": polls, "refund_only": True})
        if polls >= self.max_polls:
            return Done({"outcome": "no_rma", "polls": polls})
        return Wait(
            f"no Orange Connex RMA references {sn} yet (look {polls + 1} of {self.max_polls})",
            self.delay(polls),
            {"polls": polls + 1},
        )


def never(_rma: Rma | None) -> bool:
    return False


async def push_each(
    oc: OCClient,
    sn: str,
    rmas: Iterable[Rma],
    push: Callable[[Rma], Awaitable[object]],
    *,
    landed: Callable[[Rma | None], bool] = never,
) -> list[str]:
    """Runs ``push`` for each RMA and answers the order numbers it was applied to.

    After OC refuses a push the RMA is looked at again: ``landed(rma)`` (the RMA if still
    open, else None) says it already shows the push's effect (an earlier try landed and its
    repeat is refused): done. Otherwise an RMA closed meanwhile (someone cancelled it in OC)
    is skipped, and a refusal on one that stays open surfaces (the executor retries or parks
    the task)."""
    done: list[str] = []
    for rma in rmas:
        try:
            await push(rma)
        except OCBusinessError as exc:
            now = await still_open(oc, sn, rma.order_number)
            if landed(now):
                log.info("OC RMA %s already shows the push (%s)", rma.order_number, exc.code)
            elif now is None:
                log.info("OC RMA %s was closed meanwhile (%s)", rma.order_number, exc.code)
                continue
            else:
                raise
        done.append(rma.order_number)
    return done


async def still_open(oc: OCClient, sn: str, order_number: str) -> Rma | None:
    """The RMA as OC shows it now if it is still open, else None: after OC refused a push, only
    a fresh look tells "closed meanwhile" (nothing left to do) from a real refusal."""
    for rma in await rmas_of(oc, sn):
        if rma.order_number == order_number and rma.is_open:
            return rma
    return None


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
        # Rotated tokens are secrets the configuration never named: from now on every log
        # line, error column and health answer has them redacted.
        add_secret(row.refresh_token or "")
        add_secret(row.access_token or "")
        return StoredTokens(row.refresh_token, row.access_token or "", expires)

    async def save(
        self, client_id: str, refresh_token: str, access_token: str, expires_at: float
    ) -> None:
        add_secret(refresh_token)
        add_secret(access_token)
        when = datetime.fromtimestamp(expires_at, UTC) if expires_at > 0 else None
        await self._store.save_oc_tokens(client_id, refresh_token, access_token or None, when)

    def exclusive(self, client_id: str) -> AbstractAsyncContextManager[None]:
        return self._store.oc_token_lock(client_id)
