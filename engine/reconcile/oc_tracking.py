"""Task kind ``oc_tracking``: Temu's reverse logistics show a tracking number the OC RMA lacks.

One task per (return, distinct tracking number), planned from the change log and after our own
label uploads; UPDATE_TRACKING is pushed to each open RMA of the return that does not have that
number yet, with a messageId that stays the same across retries. While OC holds no RMA for the
return the task looks again later (``RmaWait``).
"""

from __future__ import annotations

import logging

from engine.counters import RunCounters
from engine.oc.client import OCClient
from engine.oc.wire import Rma
from engine.reconcile.oc_rmas import RmaWait, open_rmas, push_each, push_message_id, rmas_of
from engine.reconcile.tasks import OC_TRACKING, Done, Lease, Outcome, Park, tracking_key
from engine.store.outbox import Task

log = logging.getLogger(__name__)


class OcTracking:
    kind = OC_TRACKING

    def __init__(self, *, oc: OCClient, counters: RunCounters, no_rma: RmaWait) -> None:
        self._oc = oc
        self._counters = counters
        self._no_rma = no_rma

    async def run(self, task: Task, lease: Lease) -> Outcome:
        p = task.payload
        sn = str(p["sn"])
        tracking = str(p["tracking_number"])
        carrier = str(p.get("carrier_name") or "")
        message_id = str(p["message_id"])
        rmas = await rmas_of(self._oc, sn)
        if not rmas:
            return self._no_rma.outcome(sn, int(p.get("polls") or 0))
        # Case and spaces aside: OC holding "1z 999" already has Temu's "1Z999".
        stale = [r for r in open_rmas(rmas) if not _same(r.tracking_number, tracking)]
        if stale and not carrier:
            return Park(f"Temu shows tracking {tracking} for {sn} without a carrier name")

        async def tell(rma: Rma) -> None:
            await self._oc.update_tracking(
                rma.order_number,
                tracking,
                carrier,
                message_id=push_message_id(message_id, rma.order_number),
            )
            self._counters.oc_updates += 1
            log.info("OC RMA %s told tracking %s (Temu return %s)", rma.order_number, tracking, sn)

        def has_it(now: Rma | None) -> bool:
            return now is not None and _same(now.tracking_number, tracking)

        pushed = await push_each(self._oc, sn, stale, tell, landed=has_it)
        return Done({"outcome": "pushed" if pushed else "up_to_date", "rmas": pushed})


def _same(held: str | None, tracking: str) -> bool:
    """OC holds ``tracking`` (case and spaces aside: "1z 999" is Temu's "1Z999")."""
    return held is not None and tracking_key(held) == tracking_key(tracking)
