"""Buyer-chosen pick-up returns (issue 14 b): the ``pickup_cases`` world shape and the
``refuse_mode_mismatch`` upload check (see engine/sim/modes.py)."""

from __future__ import annotations

from typing import Any

from engine.sim.codes import LABEL_INVALID, ApiError
from engine.sim.data import ReturnPlan, ShopData, make_return, make_rma
from engine.sim.oc_state import OcState
from engine.sim.returns import DROP_OFF, LABEL_PENDING, PICK_UP, ReturnRec

# (case name, buyer chose pick-up slots, OC holds an RMA and so issues the label)
CASES: tuple[tuple[str, bool, bool], ...] = (
    ("slots_oc_label", True, True),
    ("slots_merchant_label", True, False),
    ("no_slots_oc_label", False, True),
    ("no_slots_merchant_label", False, False),
)


def add_pickup_cases(data: ShopData, oc: OcState, at: int) -> list[dict[str, Any]]:
    """Four label-awaiting pick-up returns stamped ``at`` (the end of the data range)."""
    made: list[dict[str, Any]] = []
    orders = len(data.orders)
    if orders == 0:
        return made
    for name, slots, with_rma in CASES:
        plan = ReturnPlan(LABEL_PENDING, PICK_UP, label_uploaded=False, with_slots=slots)
        order_seq = data.rng.randrange(orders)
        rec = make_return(data, plan, order_seq, at, at, data.returns.next_seq())
        data.returns.add(rec)
        rma = make_rma(data, rec, oc) if with_rma else None
        made.append(
            {
                "shopId": data.shop.shop_id,
                "case": name,
                "parentAfterSalesSn": rec.sn,
                "parentOrderSn": rec.order_sn,
                "slots": bool(rec.pickup_slots),
                "rma": None if rma is None else rma.order_number,
            }
        )
    return made


def check_mode(rec: ReturnRec, *, pick_up: bool) -> None:
    """Refuses an upload whose mode contradicts the buyer's choice. temu-api.md does not say
    what Temu does with one; refusing is the less convenient answer, so the engine must send
    the mode the buyer chose. A return without a delivery type (refund only) is not checked."""
    wanted = rec.delivery_type
    if wanted == PICK_UP and not pick_up:
        raise ApiError(
            LABEL_INVALID, "the buyer chose pick-up; a drop-off upload", reason="mode_mismatch"
        )
    if wanted == DROP_OFF and pick_up:
        raise ApiError(
            LABEL_INVALID, "the buyer chose drop-off; a pick-up upload", reason="mode_mismatch"
        )
