"""Task kind ``oc_cancel``: a Temu return cancelled (6) or denied (7) cancels its open OC RMAs.

Planned from the change log (one task per return). The push carries the messageId stored with
the task, so a retry after a lost answer is recognised by OC instead of applied twice. While OC
holds no RMA for the return the task looks again later (``RmaWait``): the
merchant may open the RMA after the buyer cancelled.
"""

from __future__ import annotations

import logging

from engine.counters import RunCounters
from engine.oc.client import OCClient
from engine.oc.wire import Rma
from engine.reconcile.oc_rmas import RmaWait, open_rmas, push_each, push_message_id, rmas_of
from engine.reconcile.tasks import OC_CANCEL, Done, Lease, Outcome
from engine.store.outbox import Task

log = logging.getLogger(__name__)


class OcCancel:
    kind = OC_CANCEL

    def __init__(self, *, oc: OCClient, counters: RunCounters, no_rma: RmaWait) -> None:
        self._oc = oc
        self._counters = counters
        self._no_rma = no_rma

    async def run(self, task: Task, lease: Lease) -> Outcome:
        sn = str(task.payload["sn"])
        message_id = str(task.payload["message_id"])
        rmas = await rmas_of(self._oc, sn)
        if not rmas:
            return self._no_rma.outcome(
                sn,
                int(task.payload.get("polls") or 0),
                after_sales_type=task.payload.get("after_sales_type"),
            )

        async def cancel(rma: Rma) -> None:
            await self._oc.cancel_rma(
                rma.order_number, message_id=push_message_id(message_id, rma.order_number)
            )
            self._counters.oc_updates += 1
            log.info("OC RMA %s cancelled (Temu return %s closed)", rma.order_number, sn)

        # An RMA found closed after OC refused the CANCEL (ours landed, or someone else's) is
        # skipped: nothing is left to cancel and the task is done.
        cancelled = await push_each(self._oc, sn, open_rmas(rmas), cancel)
        return Done({"outcome": "cancelled" if cancelled else "no_open_rma", "rmas": cancelled})
