"""OC answers that also hold other returns' RMAs (issue 14 a, mode ``oc_foreign_rmas``).

The spec assumes ``query/orders?referenceNumber=X`` answers only X's RMAs; a real search may
match more (a prefix, a fuzzy match). The less convenient answer: other returns' RMAs come
along, one with a READY label first in the list, so an engine that takes ``result[0]`` would
upload a stranger's label or cancel a stranger's RMA.
"""

from __future__ import annotations

import random

from engine.sim.oc_state import OPEN, OcState, Rma


def _ready(oc: OcState, rma: Rma) -> bool:
    return rma.label_queries > oc.label_ready_after


def _make_ready(oc: OcState, rma: Rma) -> None:
    """As if someone had fetched its label already: ready, and OC knows its tracking."""
    if not _ready(oc, rma):
        rma.label_queries = oc.label_ready_after + 1
        rma.tracking_number, rma.carrier_name = rma.label_tracking, rma.label_carrier


def with_foreign(oc: OcState, reference: str, own: list[Rma], count: int) -> list[Rma]:
    """``own`` with up to ``count`` other returns' open RMAs mixed in: a ready one first,
    then the own ones, then the rest alternating open-without-label and ready."""
    if count <= 0:
        return list(own)
    others = sorted(
        (r for r in oc.rmas.values() if r.reference_number != reference and r.status == OPEN),
        key=lambda r: r.order_number,
    )
    rng = random.Random(reference)  # the same answer for the same question
    rng.shuffle(others)
    ready = [r for r in others if _ready(oc, r)]
    fresh = [r for r in others if not _ready(oc, r)]
    picked: list[Rma] = []
    for i in range(min(count, len(others))):
        # Even positions want a ready label (the first above all), odd ones an open RMA
        # whose label was never fetched; fall back to whatever is left.
        pool = (ready or fresh) if i % 2 == 0 else (fresh or ready)
        rma = pool.pop(0)
        if i % 2 == 0:
            _make_ready(oc, rma)
        picked.append(rma)
    if not picked:
        return list(own)
    return [picked[0], *own, *picked[1:]]
