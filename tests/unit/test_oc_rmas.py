"""Which of Orange Connex's RMAs are a return's own (interface.md: an RMA is acted on only
when its referenceNumber EQUALS the Temu return's parentAfterSalesSn)."""

from __future__ import annotations

from engine.oc.wire import parse_label, parse_rma
from engine.reconcile.oc_rmas import own_rmas


def _rma(order: str, reference: object) -> dict[str, object]:
    return {"orderNumber": order, "referenceNumber": reference, "status": "1"}


def test_only_an_exactly_equal_reference_is_the_returns_own() -> None:
    rmas = [
        parse_rma(_rma("RMA-1", "PAS-1")),
        parse_rma(_rma("RMA-2", " PAS-1 ")),  # padded: a different reference
        parse_rma(_rma("RMA-3", "PAS-10")),
        parse_rma(_rma("RMA-4", "pas-1")),
    ]
    own = own_rmas("PAS-1", [r for r in rmas if r is not None])
    assert [r.order_number for r in own] == ["RMA-1"]


def test_a_labels_reference_is_kept_as_sent() -> None:
    label = parse_label({"docUrl": "https://x/l.pdf", "referenceNumber": " PAS-1 "}, "RMA-2")
    assert label is not None and label.reference_number == " PAS-1 "
    numeric = parse_rma(_rma("RMA-5", 12345))
    assert numeric is not None and numeric.reference_number == "12345"
