"""Desired versus actual, turned into outbox tasks.

- Every return Temu shows as waiting for a label (status 8, operation 10) gets one
  ``upload_label`` task (its label comes from OC unless a merchant label replaces it).
- Returns that changed since the planner's cursor over ``changes.id`` get ``oc_cancel`` (now
  6 or 7) and ``oc_tracking`` (a tracking number in their reverse logistics) tasks.

Planning is SQL only (no API calls), so its cost follows the number of pending returns and
of changes, never the size of the returns table; the OC calls happen in the tasks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from engine.reconcile.tasks import UPLOAD_KEY_PREFIX, UPLOAD_LABEL
from engine.store.reconcile_store import ReconcileStore

log = logging.getLogger(__name__)

CURSOR = "oc_pushes"
CHANGES_BATCH = 5000
# Change ids are taken at insert time; a transaction that commits after a later one leaves
# its rows behind the cursor. Its changed_at (transaction start) is seconds old at most.
LATE_COMMIT_OVERLAP_S = 120.0


@dataclass
class PlanStats:
    labels: int = 0
    cancels: int = 0
    trackings: int = 0
    changes_read: int = 0


class Planner:
    def __init__(
        self,
        recon: ReconcileStore,
        *,
        oc_enabled: bool,
        batch: int = CHANGES_BATCH,
        overlap_s: float = LATE_COMMIT_OVERLAP_S,
    ) -> None:
        self._recon = recon
        self._oc = oc_enabled
        self._batch = batch
        self._overlap = overlap_s

    async def plan(self) -> PlanStats:
        stats = PlanStats()
        if not self._oc:
            # Without OC the only label source is the merchant, whose labels are queued on
            # arrival; the change cursor stays put so enabling OC later replays the backlog.
            return stats
        stats.labels = await self._recon.plan_label_tasks(UPLOAD_LABEL, UPLOAD_KEY_PREFIX)
        while True:
            got = await self._recon.plan_oc_pushes(
                CURSOR, batch=self._batch, overlap_s=self._overlap
            )
            stats.cancels += got.cancels
            stats.trackings += got.trackings
            stats.changes_read += got.changes_read
            if got.changes_read < self._batch:
                break
        if stats.labels or stats.cancels or stats.trackings:
            log.info(
                "reconciler planned %d label uploads, %d OC cancels, %d OC tracking updates "
                "from %d changes",
                stats.labels,
                stats.cancels,
                stats.trackings,
                stats.changes_read,
            )
        return stats
