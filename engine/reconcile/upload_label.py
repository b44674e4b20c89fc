"""Task kind ``upload_label``: one return label uploaded to Temu, at most once per return.

Label source, in order: a merchant label (``labels import`` / admin POST) stored in the task,
else the label of the Orange Connex RMA whose referenceNumber is the return's sn, once OC has
issued it. Flow (temu-api.md "Uploading a return label"): prepare -> warehouse and carrier ->
upload -> read back the logistics Temu now shows.

Every run first re-reads the return from Temu: a return that no longer waits for a label
(status 8 with operation 10) ends the task, so one cancelled or denied while its OC label was
pending stops being polled.

Never twice: the task records "upload attempted" durably (and only while it holds its lease)
BEFORE the upload is sent. A run that finds that mark cannot know whether the earlier upload
landed (answer lost, process killed). Temu's returns list may lag and still offer operation 10
after the upload landed, so before any second upload the return's logistics
(``parentreturnorder.get``) are read: the attempted tracking number there (case and spaces
aside) means it landed. The same look comes first when Temu seems to ask again for a label
(``previous_result``): our own upload moves updateAt while the list may still offer the
upload. A look that fails proves nothing: the task retries, it never uploads on it.
An upload whose answer was lost is tried again only after minutes (UNANSWERED_RETRY_S). The
upload call is given a deadline at the end of the lease cover, so no resend (after 4000004)
can be in flight once another worker may claim the task.

Mode (interface.md "Return labels"): the label's own logisticMode; else the buyer's choice on
the return (returnDeliveryType 3 drop off, 4 pick up); else reconciler.logistic_mode. A label
whose mode contradicts the buyer's choice is never sent.

Only RMAs whose referenceNumber is this return's sn are used (``rmas_of``); a label OC
answers for another reference is not taken either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from engine.config import LABEL_UPLOAD_COVER_S
from engine.counters import RunCounters
from engine.oc.client import OCClient
from engine.oc.wire import Rma, new_message_id
from engine.reconcile.carriers import CarrierDirectory, UnknownCarrier, region_of
from engine.reconcile.labels import LabelRequest
from engine.reconcile.oc_rmas import open_rmas, rmas_of
from engine.reconcile.tasks import (
    UPLOAD_LABEL,
    Done,
    Lease,
    Outcome,
    Park,
    Retry,
    Wait,
    tracking_key,
)
from engine.reconcile.temu_side import TemuReturn, TemuReturns, trackings
from engine.store.outbox import Task
from engine.store.reconcile_store import ReconcileStore, ReturnInfo
from engine.store.store import Store
from engine.temu.errors import AftersalesStateError, RateLimited, TemuError
from engine.temu.transport import DeadlinePassed

log = logging.getLogger(__name__)

FORBIDDEN = 130010005
DROP_OFF, PICK_UP = "dropOff", "pickUp"
SLOT_MODE, LATEST_MODE = 1, 3  # pickUpTimeScheduleMode
# The upload call must finish inside the lease; config checks apps.timeout_s against it.
UPLOAD_COVER_S = LABEL_UPLOAD_COVER_S
# After an upload whose answer was lost: Temu's returns list may still show the return as
# waiting for a minute or more, so the next look comes after minutes, not at the next pass.
UNANSWERED_RETRY_S = 300.0
# An OC carrier Temu's list does not map (yet): look again later, without using attempts.
CARRIER_WAIT_S = 1800.0
BUYER_MODES = {3: DROP_OFF, 4: PICK_UP}  # returnDeliveryType


class LabelProblem(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def label_payload(req: LabelRequest) -> dict[str, Any]:
    """The part of a merchant label the upload needs, as stored in the task payload."""
    return {
        "tracking_number": req.tracking_number,
        "carrier_id": req.carrier_id,
        "carrier_name": req.carrier_name,
        "file_url": req.file_url,
        "location_id": req.location_id,
        "logistic_mode": req.logistic_mode,
        "source": req.source,
    }


def normalize_mode(mode: str | None) -> str | None:
    if not mode:
        return None
    key = mode.replace("_", "").replace("-", "").replace(" ", "").lower()
    return {"dropoff": DROP_OFF, "pickup": PICK_UP}.get(key)


def buyer_mode(delivery_type: int | None) -> str | None:
    """The mode the buyer chose on the return (returnDeliveryType), None when it does not say."""
    return BUYER_MODES.get(delivery_type) if delivery_type is not None else None


def mode_conflict(label_mode: str | None, delivery_type: int | None) -> str | None:
    """A reason naming both when the label's mode contradicts the buyer's choice, else None."""
    label, buyer = normalize_mode(label_mode), buyer_mode(delivery_type)
    if label is None or buyer is None or label == buyer:
        return None
    return (
        f"the label's logisticMode is {label} but the buyer chose {buyer} "
        f"(returnDeliveryType {delivery_type})"
    )


class UploadLabel:
    kind = UPLOAD_LABEL

    def __init__(
        self,
        *,
        store: Store,
        recon: ReconcileStore,
        temu: Mapping[str, TemuReturns],
        carriers: CarrierDirectory,
        oc: OCClient | None,
        counters: RunCounters,
        default_mode: str,
        poll_delay: Callable[[int], float],
    ) -> None:
        self._store = store
        self._recon = recon
        self._temu = temu
        self._carriers = carriers
        self._oc = oc
        self._counters = counters
        self._default_mode = normalize_mode(default_mode) or DROP_OFF
        self._poll_delay = poll_delay

    async def run(self, task: Task, lease: Lease) -> Outcome:
        p: dict[str, Any] = task.payload
        shop_id, sn = str(p["shop_id"]), str(p["sn"])
        temu = self._temu.get(shop_id)
        if temu is None:
            return Park(f"shop {shop_id!r} is not configured")
        found = await self._recon.find_returns(sn, shop_id)
        if not found:
            return Park(f"unknown return {sn} (not in the returns table of shop {shop_id})")
        info = found[0]
        attempted_before = bool(p.get("attempted"))
        # Temu's word decides, not our rows: an earlier upload may have landed (answer lost),
        # or the return moved on (cancelled, denied, labelled elsewhere) while we waited for
        # OC, and a task that stopped being needed must end instead of polling OC forever.
        now = await temu.current(sn, info.create_at)
        if now is None:
            return Park(f"Temu no longer lists return {sn}")
        if not now.awaiting_label:
            if attempted_before:
                return await self._settled(temu, sn, p.get("attempt") or {}, now.status)
            return Done({"outcome": "not_needed", "temu_status": now.status})

        earlier = _earlier_upload(p)
        if earlier is not None and not attempted_before and _other_label(p, earlier):
            # Temu asked again and the merchant answered with another parcel: that label is
            # the answer, whatever the old one's tracking still shows on the return.
            earlier = None
        if earlier is not None:
            # The list still offers the upload, but it may lag behind an upload that landed
            # (answer lost, or Temu's updateAt moved by our own upload and taken for a new
            # request): the return's logistics show it at once. No second upload without
            # that look.
            shown = await self._confirm_read(temu, sn)
            if not isinstance(shown, list):
                return shown
            if _shows(shown, earlier.get("tracking_number")):
                log.info("label for %s already on the return (earlier upload landed)", sn)
                if attempted_before:
                    self._counters.labels_uploaded += 1
                return Done({**earlier, "outcome": "uploaded", "confirmed_by_reread": True})

        label = p.get("label")
        if not label:
            waiting = await self._oc_label(sn, int(p.get("polls") or 0))
            if not isinstance(waiting, dict):
                return waiting
            label = waiting
        if not info.parent_order_sn:
            return Park(f"return {sn} has no parentOrderSn stored")

        try:
            prepared = await temu.prepare(sn, info.parent_order_sn)
        except AftersalesStateError as exc:
            return await self._refused(temu, info, exc, {}, attempted_before)
        try:
            params, summary = await self._params(temu, info, now, label, prepared)
        except UnknownCarrier as exc:
            # An empty or stale carrier list, or a carrier Temu adds later: not the task's
            # fault, and a later pass can finish it.
            return Wait(exc.reason, CARRIER_WAIT_S)
        except LabelProblem as exc:
            return Park(exc.reason)

        progress = {"attempted": True, "attempt": summary, "label": label}
        request_at = _int_or_none(now.item.get("updateAt"))
        if request_at is not None:
            progress["request_at"] = request_at  # which of Temu's requests this answers
        # The lease covers UPLOAD_COVER_S from before it was stretched: no (re)send may start
        # that could still be in flight when another worker may claim the task.
        deadline = asyncio.get_running_loop().time() + UPLOAD_COVER_S
        await lease.save_progress(progress, cover_s=UPLOAD_COVER_S)
        try:
            await temu.upload(params, deadline=deadline)
        except AftersalesStateError as exc:
            return await self._refused(temu, info, exc, summary, attempted_before)
        except (RateLimited, DeadlinePassed) as exc:
            if exc.flagged_success:
                # "success: true" beside 4000004: it may have been applied.
                return self._unanswered(sn, exc)
            # Every try was refused by the rate limit (4000004 / HTTP 429) or never sent: no
            # upload was applied. The attempt mark goes, so the next run uploads without
            # first needing Temu to show a reverse order it cannot have yet; an ordinary
            # retry, not the long wait of a lost answer.
            await lease.save_progress({"attempted": False, "attempt": {}}, cover_s=0.0)
            return Retry(f"label upload for {sn} not sent: {exc}")
        except TemuError as exc:
            if not exc.retryable or exc.scope != "call":
                raise  # a refusal that proves nothing was applied: the executor's table
            return self._unanswered(sn, exc)
        except (OSError, TimeoutError) as exc:
            return self._unanswered(sn, exc)
        self._counters.labels_uploaded += 1
        log.info("return label uploaded", extra={"shop": shop_id, "parent_after_sales_sn": sn})
        shown = await self._read_back(temu, sn)
        return Done({"outcome": "uploaded", **summary, "temu_tracking": _first(shown)})

    # -- label source -------------------------------------------------------------------------

    def _unanswered(self, sn: str, exc: BaseException) -> Outcome:
        """The upload went out and no answer came: it may have landed. The next run reads the
        return's logistics before anything else, minutes from now."""
        return Retry(
            f"label upload for {sn} sent but unanswered ({type(exc).__name__}: {exc}); "
            "checking Temu before any second upload",
            UNANSWERED_RETRY_S,
        )

    async def _oc_label(self, sn: str, polls: int) -> dict[str, Any] | Outcome:
        if self._oc is None:
            return Park("no label: no merchant label was submitted and Orange Connex is disabled")
        wait_patch = {"polls": polls + 1}
        delay = self._poll_delay(polls)
        rmas = open_rmas(await rmas_of(self._oc, sn))
        if not rmas:
            return Wait(f"no open Orange Connex RMA references {sn} yet", delay, wait_patch)
        for rma in rmas:
            label = await self._oc.query_label(rma.order_number)
            if label is None:
                continue  # success false or no docUrl: not ready (orange-connex-api.md)
            # The label answer may leave out what the RMA (query/orders) already says.
            tracking = label.tracking_number or rma.tracking_number
            carrier = label.carrier_name or rma.carrier_name
            if not (tracking and carrier):
                continue
            if label.reference_number is not None and label.reference_number != sn:
                log.warning(
                    "OC label of RMA %s names referenceNumber %r, not return %s: not used",
                    rma.order_number,
                    label.reference_number,
                    sn,
                )
                continue
            return _oc_label_payload(rma, label.doc_url, tracking, carrier)
        return Wait(f"Orange Connex label for {sn} not ready yet", delay, wait_patch)

    # -- upload parameters --------------------------------------------------------------------

    async def _params(
        self,
        temu: TemuReturns,
        info: ReturnInfo,
        now: TemuReturn,
        label: dict[str, Any],
        prepared: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Raises LabelProblem (park) or UnknownCarrier (wait)."""
        # The buyer's choice as Temu shows it now, else as stored.
        delivery = now.delivery_type
        if delivery is None:
            delivery = info.return_delivery_type
        conflict = mode_conflict(label.get("logistic_mode"), delivery)
        if conflict is not None:
            raise LabelProblem(conflict)
        # interface.md: the label's mode, else the buyer's, else reconciler.logistic_mode (an
        # OC label never says).
        mode = (
            normalize_mode(label.get("logistic_mode")) or buyer_mode(delivery) or self._default_mode
        )
        warehouse = _warehouse(prepared, label.get("location_id"))
        carrier_id = await self._carriers.resolve(
            carrier_id=label.get("carrier_id"),
            carrier_name=label.get("carrier_name"),
            region_id=region_of(info.region_id, info.parent_order_sn),
            fetch=temu.carriers,
        )
        url = str(label["file_url"])
        dto: dict[str, Any] = {
            "mallWarehouseId": warehouse,
            "carrierId": self._carriers.as_listed(carrier_id),
            "trackingNumber": str(label["tracking_number"]),
        }
        # Drop off: the label PDF; pick up: the pick-up certificate image.
        dto["returnLabelUrl" if mode == DROP_OFF else "pickUpCertificateImageUrl"] = url
        params: dict[str, Any] = {
            "parentAfterSalesSn": info.parent_after_sales_sn,
            "parentOrderSn": info.parent_order_sn,
            "returnLabelDTOList": [dto],
        }
        if mode == PICK_UP:
            params.update(_schedule(prepared))
        summary = {
            "tracking_number": dto["trackingNumber"],
            "carrier_id": carrier_id,
            "warehouse_id": warehouse,
            "logistic_mode": mode,
            "file_url": url,
            "schedule_mode": params.get("pickUpTimeScheduleMode"),
        }
        return params, summary

    # -- after the fact -----------------------------------------------------------------------

    async def _refused(
        self,
        temu: TemuReturns,
        info: ReturnInfo,
        exc: AftersalesStateError,
        attempt: dict[str, Any],
        attempted_before: bool,
    ) -> Outcome:
        """Temu refused prepare or upload (130010004-7): re-read, then decide."""
        sn = info.parent_after_sales_sn
        now = await temu.current(sn, info.create_at)
        if now is None:
            return Park(f"Temu does not know return {sn}: {exc}")
        if not now.awaiting_label:
            if attempted_before and exc.code == FORBIDDEN:
                log.info("label for %s already on the return (earlier attempt landed)", sn)
            return await self._settled(temu, sn, attempt, now.status)
        if exc.code == FORBIDDEN:
            # "Not allowed now" while the list still offers the upload: the list may lag
            # behind a change (an upload that landed, a state Temu is still moving). A later
            # pass can settle it; retrying uses attempts, so it cannot go on for ever.
            return Retry(f"Temu refused the label for {sn} for now: {exc}", UNANSWERED_RETRY_S)
        return Park(f"Temu refused the label for {sn}: {exc}")

    async def _settled(
        self, temu: TemuReturns, sn: str, attempt: dict[str, Any], status: int | None
    ) -> Outcome:
        """Temu no longer offers the upload: record what it shows and finish without uploading."""
        shown = await self._read_back(temu, sn)
        if _shows(shown, attempt.get("tracking_number")):
            # Our earlier upload landed although its answer was lost.
            self._counters.labels_uploaded += 1
            return Done({"outcome": "uploaded", **attempt, "confirmed_by_reread": True})
        return Done(
            {"outcome": "not_needed", "temu_status": status, "temu_tracking": _first(shown)}
        )

    async def _confirm_read(self, temu: TemuReturns, sn: str) -> list[str] | Outcome:
        """The tracking numbers Temu shows on the return, read before any second upload: a
        failed or unreadable answer is not "nothing shown" (it proves nothing), so the task
        retries instead. 130010004 too: the earlier upload may have made the reverse order
        Temu is still building. Configuration refusals propagate (the executor waits)."""
        try:
            logistics = await temu.logistics(sn)
        except TemuError as exc:
            if exc.scope != "call":
                raise
            return self._unconfirmed(sn, exc)
        except (OSError, TimeoutError) as exc:
            return self._unconfirmed(sn, exc)
        if not isinstance(logistics.get("logisticsInfoList"), list):
            return self._unconfirmed(sn, ValueError("no logisticsInfoList in the answer"))
        return await self._record_read(temu, sn, logistics)

    def _unconfirmed(self, sn: str, exc: BaseException) -> Outcome:
        return Retry(
            f"cannot tell whether the earlier label upload for {sn} landed: reading the "
            f"return's logistics failed ({type(exc).__name__}: {exc}); no second upload yet"
        )

    async def _read_back(self, temu: TemuReturns, sn: str) -> list[str]:
        """Stores the logistics Temu shows now and answers its tracking numbers; never fails
        the task (the upload is done, or Temu no longer offers one): only for a result."""
        try:
            logistics = await temu.logistics(sn)
        except Exception as exc:
            log.warning("reading back logistics of %s failed: %s", sn, exc)
            return []
        try:
            return await self._record_read(temu, sn, logistics)
        except Exception as exc:
            log.warning("storing the logistics of %s failed: %s", sn, exc)
            return [number for number, _ in trackings(logistics)]

    async def _record_read(
        self, temu: TemuReturns, sn: str, logistics: dict[str, Any]
    ) -> list[str]:
        """Stores what was read and lets OC hear of each number; answers the numbers."""
        await self._store.write_return_logistics(temu.shop_id, sn, logistics)
        found = trackings(logistics)
        if self._oc is not None:
            # The RMA may not know these numbers yet (a merchant label): let OC hear of each.
            for tracking, carrier in found:
                try:
                    await self._recon.enqueue_tracking(
                        temu.shop_id, sn, tracking, carrier, new_message_id()
                    )
                except Exception as exc:
                    log.warning("queueing the OC tracking update of %s failed: %s", sn, exc)
        return [tracking for tracking, _ in found]


def _earlier_upload(p: dict[str, Any]) -> dict[str, Any] | None:
    """The upload this task already made that may be on the return: the attempt whose answer
    never came, else the one it made before Temu seemed to ask again (``previous_result``,
    kept by the planner and by a merchant label that reopened the task)."""
    if p.get("attempted"):
        attempt = p.get("attempt")
        return attempt if isinstance(attempt, dict) else {}
    previous = p.get("previous_result")
    if (
        isinstance(previous, dict)
        and previous.get("outcome") == "uploaded"
        and previous.get("tracking_number")
    ):
        return {k: v for k, v in previous.items() if k != "temu_tracking"}
    return None


def _other_label(p: dict[str, Any], earlier: dict[str, Any]) -> bool:
    """The task's label is another parcel than the earlier upload's."""
    label = p.get("label")
    number = label.get("tracking_number") if isinstance(label, dict) else None
    previous = earlier.get("tracking_number")
    return bool(number) and bool(previous) and tracking_key(number) != tracking_key(previous)


def _shows(shown: list[str], tracking: object) -> bool:
    """Temu shows ``tracking`` on the return (case and spaces aside)."""
    if not tracking:
        return False
    key = tracking_key(tracking)
    return any(tracking_key(number) == key for number in shown)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _first(items: list[str]) -> str | None:
    return items[0] if items else None


def _oc_label_payload(rma: Rma, doc_url: str, tracking: str, carrier: str) -> dict[str, Any]:
    return {
        "tracking_number": tracking,
        "carrier_id": None,
        "carrier_name": carrier,
        "file_url": doc_url,
        "location_id": None,
        "logistic_mode": None,
        "source": "orange_connex",
        "oc_order_number": rma.order_number,
    }


def _warehouse(prepared: dict[str, Any], location_id: str | None) -> Any:
    """The warehouse id exactly as prepare listed it (number or string): it is sent back as
    ``mallWarehouseId`` unchanged. ``locationId`` is matched on its text."""
    listed = [
        w["warehouseId"]
        for w in prepared.get("availableReturnWarehouseList") or []
        if isinstance(w, dict) and w.get("warehouseId") not in (None, "")
    ]
    if not listed:
        raise LabelProblem("Temu offers no return warehouse for this return")
    if location_id is None:
        return listed[0]
    for warehouse in listed:
        if str(warehouse) == location_id:
            return warehouse
    raise LabelProblem(
        f"locationId {location_id!r} is not one of the return's warehouses "
        f"({', '.join(str(w) for w in listed)})"
    )


def _schedule(prepared: dict[str, Any]) -> dict[str, Any]:
    for slot in prepared.get("userSelectedPickUpTimeList") or []:
        if isinstance(slot, dict) and slot.get("startTimestamp") and slot.get("endTimestamp"):
            # The buyer's preferred slot: the first one they chose.
            return {
                "pickUpTimeScheduleMode": SLOT_MODE,
                "startTimestamp": slot["startTimestamp"],
                "endTimestamp": slot["endTimestamp"],
            }
    latest = prepared.get("merchantLatestPickUpTime")
    if not latest:
        raise LabelProblem("pick-up: Temu gives neither a buyer slot nor merchantLatestPickUpTime")
    return {"pickUpTimeScheduleMode": LATEST_MODE, "latestTimestamp": latest}
