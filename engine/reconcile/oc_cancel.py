"""Task kind ``oc_cancel``: a Temu return cancelled (6) or denied (7) cancels its open OC RMAs.

Planned from the change log (one task per return). The push carries the messageId stored with
the task, so a retry after a lost answer is recognised by OC instead of applied twice.
"""

from __future__ import annotations

import logging

from engine.oc.client import OCBusinessError, OCClient
from engine.reconcile.oc_rmas import open_rmas, push_message_id
from engine.reconcile.tasks import OC_CANCEL, Done, Lease, Outcome
from engine.store.store import Task
from engine.summary import RunCounters

log = logging.getLogger(__name__)


def _already_cancelled(exc: OCBusinessError) -> bool:
    return "CANCEL" in exc.code.upper()


class OcCancel:
    kind = OC_CANCEL

    def __init__(self, *, oc: OCClient, counters: RunCounters) -> None:
        self._oc = oc
        self._counters = counters

    async def run(self, task: Task, lease: Lease) -> Outcome:
        sn = str(task.payload["sn"])
        message_id = str(task.payload["message_id"])
        cancelled: list[str] = []
        for rma in open_rmas(await self._oc.query_orders(sn)):
            try:
                await self._oc.cancel_rma(
                    rma.order_number, message_id=push_message_id(message_id, rma.order_number)
                )
            except OCBusinessError as exc:
                if not _already_cancelled(exc):
                    raise
                log.info("OC RMA %s was already cancelled", rma.order_number)
                continue
            self._counters.oc_updates += 1
            cancelled.append(rma.order_number)
            log.info("OC RMA %s cancelled (Temu return %s closed)", rma.order_number, sn)
        return Done({"outcome": "cancelled" if cancelled else "no_open_rma", "rmas": cancelled})
