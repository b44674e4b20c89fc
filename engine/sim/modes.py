"""Hostile-service modes for return labels (issue 14), all off by default.

Set from ``SimConfig`` at build time and changed later through ``POST /_sim/modes`` (or
``Simulator.set_modes``):

- ``oc_foreign_rmas`` (int, 0 off): every OC ``query/orders`` answer also holds up to this
  many RMAs of OTHER returns, the first of them FIRST in the list (ahead of the return's own
  RMAs) with a ready label, the rest alternating open-without-label and ready-label. An engine
  must act only on the RMA whose ``referenceNumber`` is its own return (interface.md).
- ``pickup_cases`` (bool, build time only): each shop gets four more label-awaiting
  pick-up returns (``returnDeliveryType`` 4): with and without buyer pick-up slots, each with
  an OC RMA (OC label) and without (merchant label). ``/_sim/truth/pickup_cases`` names them.
- ``refuse_mode_mismatch`` (bool): an upload whose mode (pick-up or drop-off) contradicts the
  buyer's ``returnDeliveryType`` is refused with 130010006. temu-api.md is silent on what Temu
  does then; refusing is the less convenient answer (it also refuses a pick-up upload on a
  drop-off return, which interface.md already forbids the engine to send).
- ``lost_upload_answers`` (int, 0 off): the next N label uploads that are APPLIED lose their
  answer: ``lost_answer_how`` "close" closes the connection, "delay" answers only after
  ``lost_answer_delay_s`` (past a client's timeout; nothing is written if it left).
- ``return_list_lag_s`` (float, 0 off): for this long after an accepted upload, the returns
  LIST keeps showing the return as it was (status 8 with operation 10, its old updateAt)
  while ``parentreturnorder.get`` shows the new tracking at once.
- ``empty_carrier_lists`` (int, 0 off): the next N carrier-list answers
  (``temu.aftersales.carrier.get`` and ``bg.logistics.companies.get``) hold an empty list.
- ``ignore_return_sn_filter`` (bool): ``bg.aftersales.parentaftersales.list.get`` ignores
  ``parentAfterSalesSnList`` and answers the whole window (temu-api.md lists the filter as
  optional and says nothing of how strictly it is applied): a re-read of one return that
  trusts the filter finds someone else's returns on its first page.
- ``oc_business_success`` (bool): OC's business refusals (an RMA not found, a cancel not
  allowed...) come with ``"success": true`` and ``"hasBusinessException": true``: the envelope of
  orange-connex-api.md carries both flags and says nothing of how they combine, and a client
  reading ``success`` alone would take a refused push for an applied one.
- ``string_error_codes`` (bool): Temu's error answers carry ``errorCode`` as a JSON string
  (``"4000004"``): temu-api.md gives the envelope's codes as numbers, and "parse responses
  defensively" covers a gateway that quotes them.
- ``lines_max_page_size`` (int, 0 off): ``bg.aftersales.aftersales.list.get`` refuses a
  ``pageSize`` above this with 3000000. temu-api.md gives that list no maximum (only the
  parent list's 200), so a client cannot know the real one.
- ``exclusive_order_filters`` (bool): ``bg.order.list.v2.get`` refuses (3000000) a request
  with both the update pair and the creation pair: temu-api.md lists them as alternatives
  ("... or createAfter + createBefore").
- ``oc_bare_labels`` (bool): a ready OC label answer has its ``docUrl`` but leaves
  ``trackingNumber`` and ``carrierName`` empty; the RMA of ``query/orders`` holds them
  (orange-connex-api.md lists them on both, and says only ``docUrl`` tells readiness).
- ``accept_second_label`` (bool): prepare and upload do not refuse a return that already
  has a label applied while it stays in status 8: a second upload is applied on top of the
  first (temu-api.md only says an upload is for status 8 with operation 10, and a lagging
  Temu may not have dropped the operation yet). Makes an engine's double upload visible in
  ``uploads`` instead of hidden behind a 130010005 refusal.

Issue 12 (hostile data):

- ``nul_in_errors`` (bool): every Temu API error and OC business error message carries a
  U+0000 (seen from services that build messages from C strings); Postgres text cannot hold
  it, so an engine storing the message as is fails its own bookkeeping write.
- ``logistics_not_ready`` (int, 0 off): the next N ``bg.aftersales.parentreturnorder.get``
  calls answer 130010004 (Temu has no reverse order yet), though the return lists as shipped.
- ``poison`` (bool): every 7th record of each shop comes poisoned, in orders, order lines,
  returns and return lines, raw bytes included (engine/sim/poison.py); ``/_sim/truth/poisoned``
  names them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from engine.sim.config import LOST_ANSWER_HOW, SimConfig

# Modes that only shape the generated world; changing them later would change nothing.
_BUILD_ONLY = frozenset({"pickup_cases"})


@dataclass
class Modes:
    oc_foreign_rmas: int = 0
    pickup_cases: bool = False
    refuse_mode_mismatch: bool = False
    lost_upload_answers: int = 0
    lost_answer_how: str = "close"
    lost_answer_delay_s: float = 35.0
    return_list_lag_s: float = 0.0
    empty_carrier_lists: int = 0
    oc_bare_labels: bool = False
    exclusive_order_filters: bool = False
    oc_business_success: bool = False
    string_error_codes: bool = False
    lines_max_page_size: int = 0
    ignore_return_sn_filter: bool = False
    nul_in_errors: bool = False
    logistics_not_ready: int = 0
    poison: bool = False
    accept_second_label: bool = False
    # (shop_id, parentAfterSalesSn) -> (list shows the old item until, the old item)
    stale_items: dict[tuple[str, str], tuple[float, dict[str, Any]]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def from_config(cls, config: SimConfig) -> Modes:
        modes = cls()
        modes.update({f: getattr(config, f) for f in modes.names()}, building=True)
        return modes

    @staticmethod
    def names() -> tuple[str, ...]:
        return tuple(f.name for f in fields(Modes) if f.name != "stale_items")

    def snapshot(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.names()}

    def update(self, values: dict[str, Any], *, building: bool = False) -> None:
        """Validates everything first, so a bad request changes nothing."""
        unknown = set(values) - set(self.names())
        if unknown:
            raise ValueError(f"unknown modes: {sorted(unknown)}")
        if not building and _BUILD_ONLY & set(values):
            raise ValueError(f"set at build time only: {sorted(_BUILD_ONLY & set(values))}")
        clean: dict[str, Any] = {}
        for name, value in values.items():
            kind = type(getattr(Modes(), name))
            if kind is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
                clean[name] = value
            elif kind is str:
                if value not in LOST_ANSWER_HOW:
                    raise ValueError(f"{name} must be one of {', '.join(LOST_ANSWER_HOW)}")
                clean[name] = value
            else:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{name} must be a number")
                if value < 0:
                    raise ValueError(f"{name} must not be negative")
                clean[name] = kind(value)
        for name, value in clean.items():
            setattr(self, name, value)

    def error_text(self, message: str) -> str:
        return f"{message}\x00(detail)" if self.nul_in_errors else message

    # -- one-shot modes: each use spends one ------------------------------------------------
    def take_lost_answer(self) -> bool:
        if self.lost_upload_answers <= 0:
            return False
        self.lost_upload_answers -= 1
        return True

    def take_logistics_not_ready(self) -> bool:
        if self.logistics_not_ready <= 0:
            return False
        self.logistics_not_ready -= 1
        return True

    def take_empty_carriers(self) -> bool:
        if self.empty_carrier_lists <= 0:
            return False
        self.empty_carrier_lists -= 1
        return True

    # -- the lagging returns list ------------------------------------------------------------
    def hold_stale(self, shop_id: str, sn: str, item: dict[str, Any], now: float) -> None:
        if self.return_list_lag_s > 0:
            self.stale_items[(shop_id, sn)] = (now + self.return_list_lag_s, item)

    def list_item(self, shop_id: str, sn: str, fresh: dict[str, Any], now: float) -> dict[str, Any]:
        held = self.stale_items.get((shop_id, sn))
        if held is None:
            return fresh
        until, item = held
        if now >= until:
            del self.stale_items[(shop_id, sn)]
            return fresh
        return item
