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
landed (answer lost, process killed); the re-read decides: it uploads again only if Temu still
offers the upload operation (10).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from engine.counters import RunCounters
from engine.oc.client import OCClient, Rma, new_message_id
from engine.reconcile.carriers import CarrierDirectory, UnknownCarrier, region_of
from engine.reconcile.labels import LabelRequest
from engine.reconcile.oc_rmas import open_rmas
from engine.reconcile.tasks import UPLOAD_LABEL, Done, Lease, Outcome, Park, Wait
from engine.reconcile.temu_side import TemuReturns, trackings
from engine.store.reconcile_store import ReconcileStore, ReturnInfo
from engine.store.store import Store, Task
from engine.temu.errors import AftersalesStateError

log = logging.getLogger(__name__)

FORBIDDEN = 130010005
DROP_OFF, PICK_UP = "dropOff", "pickUp"
SLOT_MODE, LATEST_MODE = 1, 3  # pickUpTimeScheduleMode
# The upload call must finish inside the lease; the transport's timeout is far below this.
UPLOAD_COVER_S = 120.0


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
            params, summary = await self._params(temu, info, label, prepared)
        except LabelProblem as exc:
            return Park(exc.reason)

        await lease.save_progress(
            {"attempted": True, "attempt": summary, "label": label}, cover_s=UPLOAD_COVER_S
        )
        try:
            await temu.upload(params)
        except AftersalesStateError as exc:
            return await self._refused(temu, info, exc, summary, attempted_before)
        # Any other failure propagates: the executor retries, and the mark above makes the
        # next run re-read before it could upload again.
        self._counters.labels_uploaded += 1
        log.info("return label uploaded", extra={"shop": shop_id, "parent_after_sales_sn": sn})
        shown = await self._read_back(temu, sn)
        return Done({"outcome": "uploaded", **summary, "temu_tracking": _first(shown)})

    # -- label source -------------------------------------------------------------------------

    async def _oc_label(self, sn: str, polls: int) -> dict[str, Any] | Outcome:
        if self._oc is None:
            return Park("no label: no merchant label was submitted and Orange Connex is disabled")
        wait_patch = {"polls": polls + 1}
        delay = self._poll_delay(polls)
        rmas = open_rmas(await self._oc.query_orders(sn))
        if not rmas:
            return Wait(f"no open Orange Connex RMA references {sn} yet", delay, wait_patch)
        for rma in rmas:
            label = await self._oc.query_label(rma.order_number)
            if label is None or not (label.tracking_number and label.carrier_name):
                continue
            return _oc_label_payload(rma, label.doc_url, label.tracking_number, label.carrier_name)
        return Wait(f"Orange Connex label for {sn} not ready yet", delay, wait_patch)

    # -- upload parameters --------------------------------------------------------------------

    async def _params(
        self,
        temu: TemuReturns,
        info: ReturnInfo,
        label: dict[str, Any],
        prepared: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        warehouse = _warehouse(prepared, label.get("location_id"))
        try:
            carrier_id = await self._carriers.resolve(
                carrier_id=label.get("carrier_id"),
                carrier_name=label.get("carrier_name"),
                region_id=region_of(info.region_id, info.parent_order_sn),
                fetch=temu.carriers,
            )
        except UnknownCarrier as exc:
            raise LabelProblem(exc.reason) from None
        # interface.md: reconciler.logistic_mode is the "default for labels that do not say"
        # (an OC label never says; it is a PDF for drop-off by default).
        mode = normalize_mode(label.get("logistic_mode")) or self._default_mode
        url = str(label["file_url"])
        dto: dict[str, Any] = {
            "mallWarehouseId": warehouse,
            "carrierId": int(carrier_id) if carrier_id.isdigit() else carrier_id,
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
        return Park(f"Temu refused the label for {sn}: {exc}")

    async def _settled(
        self, temu: TemuReturns, sn: str, attempt: dict[str, Any], status: int | None
    ) -> Outcome:
        """Temu no longer offers the upload: record what it shows and finish without uploading."""
        shown = await self._read_back(temu, sn)
        if attempt.get("tracking_number") in shown:
            # Our earlier upload landed although its answer was lost.
            self._counters.labels_uploaded += 1
            return Done({"outcome": "uploaded", **attempt, "confirmed_by_reread": True})
        return Done(
            {"outcome": "not_needed", "temu_status": status, "temu_tracking": _first(shown)}
        )

    async def _read_back(self, temu: TemuReturns, sn: str) -> list[str]:
        """Stores the logistics Temu shows now and answers its tracking numbers; never fails
        the task (the upload is done)."""
        try:
            logistics = await temu.logistics(sn)
            await self._store.write_return_logistics(temu.shop_id, sn, logistics)
        except Exception as exc:
            log.warning("reading back logistics of %s failed: %s", sn, exc)
            return []
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
