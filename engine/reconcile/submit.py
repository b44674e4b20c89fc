"""Merchant labels into the outbox: the admin endpoint's LabelSubmitter and ``labels import``.

A label is checked here as far as it can be before anything is sent, so the seller hears about
a problem where they can fix it: the shape and fields (labels.py), the return (known, waiting
for a label) and the carrier (a Temu carrier id of the return's region). It then becomes, or
replaces the label of, the return's single ``upload_label`` task.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

import asyncpg

from engine.reconcile.carriers import CarrierDirectory, UnknownCarrier, region_of
from engine.reconcile.labels import LabelError, LabelRequest, parse_label
from engine.reconcile.ports import LabelRejected, SubmitResult
from engine.reconcile.tasks import UPLOAD_LABEL, upload_key
from engine.reconcile.temu_side import TemuReturns
from engine.reconcile.upload_label import label_payload, mode_conflict
from engine.store.outbox import LockedTask
from engine.store.reconcile_store import ReconcileStore
from engine.temu.errors import TemuError

log = logging.getLogger(__name__)


class LabelQueue:
    def __init__(
        self,
        *,
        recon: ReconcileStore,
        temu: Mapping[str, TemuReturns],
        carriers: CarrierDirectory,
        gate: Callable[[str], Awaitable[None]] | None = None,
        unchecked: Collection[str] = (),
    ) -> None:
        """``gate(shop_id)``: awaited before the first Temu call for a shop (the access-token
        check of ``labels import``); what it raises propagates out of :meth:`queue`.
        ``unchecked``: shops whose app another process paces now (a daemon, a backfill): no
        Temu call is made for them here (two pacers would double the app's rate); the upload
        task checks token and carrier when it runs in that process."""
        self._recon = recon
        self._temu = temu
        self._carriers = carriers
        self._gate = gate
        self._unchecked = frozenset(unchecked)

    async def queue(self, req: LabelRequest) -> SubmitResult:
        """Queues one validated label; raises LabelRejected (404, 409, 422) with the reason."""
        try:
            return await self._queue(req)
        except asyncpg.DataError as exc:
            # A value Postgres refuses (parse_label screens the known ones): this label only.
            raise LabelRejected(f"the label cannot be stored: {exc}", 422) from None

    async def _queue(self, req: LabelRequest) -> SubmitResult:
        sn = req.parent_after_sales_sn
        found = await self._recon.find_returns(sn, req.shop_id)
        if not found:
            where = f" in shop {req.shop_id}" if req.shop_id else ""
            raise LabelRejected(f"unknown return {sn}{where}", 404)
        if len(found) > 1:
            shops = ", ".join(r.shop_id for r in found)
            raise LabelRejected(f"return {sn} exists in several shops ({shops}): give shop", 422)
        info = found[0]
        conflict = mode_conflict(req.logistic_mode, info.return_delivery_type)
        if conflict is not None:
            raise LabelRejected(f"return {sn}: {conflict}", 422)
        if not info.awaiting_label:
            raise LabelRejected(
                f"return {sn} is not waiting for a label (status {info.status}, operations "
                f"{list(info.available_operations)}; a label is taken in status 8 with "
                "operation 10)",
                409,
            )
        await self._check_carrier(req, info.shop_id, info.region_id, info.parent_order_sn)

        label = label_payload(req)
        key = upload_key(info.shop_id, sn)
        patch: dict[str, Any] = {"source": "merchant", "label": label}

        def decide(existing: LockedTask) -> tuple[dict[str, Any] | None, str]:
            same = existing.payload.get("label") == label
            if existing.state in ("pending", "dead"):
                if not same and existing.state == "pending" and existing.payload.get("attempted"):
                    # An upload went out and its outcome is unknown, and the task is about to
                    # find out: another label now would be dropped (the first landed) or
                    # uploaded on top of it. A dead task finds out nothing more by itself: a
                    # new label revives it, and its run still reads the return before any
                    # upload (the attempt mark stays).
                    return None, "unconfirmed"
                return patch, "same" if same else "replaced"
            if existing.state == "done" and asks_again(existing, info.update_at):
                # Temu asks for a label again (the last one was rejected or expired): this
                # label answers the new request. The earlier upload stays known: the task
                # first checks it is not on the return (a lagging list may look like a
                # new request).
                return {**patch, **fresh_request(info.update_at, existing.result)}, "replaced"
            if existing.state in ("done", "running") and same:
                # Already taken (a client that lost our 202 sends it again): one task, 202.
                return None, "same"
            return None, existing.state

        verdict = await self._recon.upsert_task(
            UPLOAD_LABEL,
            key,
            {"shop_id": info.shop_id, "sn": sn, **patch},
            info.shop_id,
            decide=decide,
        )
        if verdict == "unconfirmed":
            raise LabelRejected(
                f"an earlier label upload for return {sn} is unconfirmed (sent, no answer "
                "yet): another label is taken once Temu shows whether it landed",
                409,
            )
        if verdict == "running":
            raise LabelRejected(f"a label upload for return {sn} is in progress", 409)
        if verdict == "done":
            raise LabelRejected(f"a return label was already uploaded for return {sn}", 409)
        return SubmitResult(dedupe_key=key, duplicate=verdict == "same")

    async def _check_carrier(
        self, req: LabelRequest, shop_id: str, region_id: int | None, order_sn: str | None
    ) -> None:
        temu = self._temu.get(shop_id)
        if temu is None:
            raise LabelRejected(f"shop {shop_id} is not configured", 422)
        if shop_id in self._unchecked:
            return
        if self._gate is not None:
            await self._gate(shop_id)
        try:
            await self._carriers.resolve(
                carrier_id=req.carrier_id,
                carrier_name=req.carrier_name,
                region_id=region_of(region_id, order_sn),
                fetch=temu.carriers,
            )
        except UnknownCarrier as exc:
            if exc.listless:
                # Temu answered an empty list: a hiccup, not the label's fault. The upload task
                # maps the carrier again (and waits while it cannot).
                log.warning("carrier check skipped for %s: %s", req.parent_after_sales_sn, exc)
                return
            raise LabelRejected(exc.reason, 422) from None
        except TemuError as exc:
            # Temu is unreachable now: the upload task maps and checks the carrier again.
            log.warning("carrier check skipped for %s: %s", req.parent_after_sales_sn, exc)


def asks_again(task: LockedTask, update_at: int | None) -> bool:
    """True when the return's updateAt is later than the request the done task answered (the
    planner's SQL applies the same rule): Temu put it back to waiting for a label."""
    if update_at is None:
        return False
    answered = task.payload.get("request_at")
    if not isinstance(answered, int) or isinstance(answered, bool):
        answered = task.updated_at
    return answered is not None and update_at > answered


def fresh_request(update_at: int | None, previous_result: Any = None) -> dict[str, Any]:
    """The payload patch that makes a done task answer Temu's new request; the result of the
    run it answered before stays as ``previous_result`` (as the planner keeps it)."""
    return {
        "attempted": False,
        "attempt": {},
        "polls": 0,
        "request_at": update_at,
        "previous_result": previous_result,
    }


class ReturnLabelSubmitter:
    """``engine.reconcile.ports.LabelSubmitter`` for ``POST /returns/{sn}/fulfillment``."""

    def __init__(self, queue: LabelQueue, shop_ids: Sequence[str]) -> None:
        self._queue = queue
        self._shops = list(shop_ids)

    async def submit(self, parent_after_sales_sn: str, body: dict[str, Any]) -> SubmitResult:
        try:
            req = parse_label(body, parent_after_sales_sn=parent_after_sales_sn, shops=self._shops)
        except LabelError as exc:
            raise LabelRejected(exc.reason, 422) from None
        return await self._queue.queue(req)
