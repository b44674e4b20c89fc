"""Poisoned records (issue 12): the ``poison`` mode serves, spread over the list pages, records
holding the odd values real marketplace data holds, in orders, order lines, returns and return
lines: invalid UTF-8 bytes, lone surrogate escapes, 1e400, integers past 2**64 (all four as raw
bytes no JSON encoder would write), full-width spaces (U+3000) in id, status and time fields, a
list where a scalar belongs, an object as a list element, records without a usable key, and
list elements that are not records at all (``STRAYS``).

The unfiltered order list also lies about its total around one second (``order_total``): an
engine must not page 10**12 / 100 pages, and must still read that second completely.

Every ``STRIDE``-th record (from ``OFFSET``) of a shop is poisoned, with the next kind of the
catalogue for its entity, always the same way, so a re-read sends the same bytes. The truth
(``Simulator.truth_orders`` ...) stays the clean record; ``poisoned(...)`` names the poisoned
ones and their kind. Raw values travel through orjson as marker strings that ``inject`` swaps
for their bytes in the encoded answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

STRIDE = 7
OFFSET = 3

# Raw JSON no encoder writes: an invalid UTF-8 sequence inside a string, a lone high surrogate
# escape (an emoji cut in half), a float beyond float64, an integer beyond 64 bits. ``%s`` is
# the marker's (ASCII) text, so poisoned keys stay distinct.
RAW: dict[str, bytes] = {
    "bad_utf8": b'"%s caf\xe9 \xff"',
    "lone_surrogate": b'"%s smile \\ud83d"',
    "huge_float": b"1e400",
    "huge_int": b"123456789012345678901234567890",
}
_MARKER = re.compile(rb'"\\u0001P:([a-z0-9_]+):([A-Za-z0-9_ .-]*)\\u0001"')


def raw(name: str, text: Any = "") -> str:
    """A marker that ``inject`` replaces with ``RAW[name]`` (holding ``text``)."""
    return f"\x01P:{name}:{text}\x01"


def inject(body: bytes) -> bytes:
    if b"\\u0001P:" not in body:
        return body
    return _MARKER.sub(lambda m: RAW[m.group(1).decode()].replace(b"%s", m.group(2)), body)


Poison = Callable[[dict[str, Any]], None]


def _set(path: tuple[str, ...], value: Any) -> Poison:
    def apply(item: dict[str, Any]) -> None:
        target = item
        for name in path[:-1]:
            target = target[name]
        target[path[-1]] = value(target.get(path[-1])) if callable(value) else value

    return apply


def _line(field: str, value: Any) -> Poison:
    """On the first line of an order."""

    def apply(item: dict[str, Any]) -> None:
        lines = item.get("orderList") or []
        if lines:
            lines[0][field] = value(lines[0].get(field)) if callable(value) else value

    return apply


def _append_line(value: Any) -> Poison:
    def apply(item: dict[str, Any]) -> None:
        item.setdefault("orderList", []).append(value)

    return apply


def _drop(path: tuple[str, ...]) -> Poison:
    def apply(item: dict[str, Any]) -> None:
        target = item
        for name in path[:-1]:
            target = target[name]
        target.pop(path[-1], None)

    return apply


def _fullwidth(value: Any) -> str:
    return f"{value}\u3000"


P = ("parentOrderMap",)
# (kind, poison); a kind says what a reader must make of it (README "Reliability").
ORDER_KINDS: tuple[tuple[str, Poison], ...] = (
    ("status_fullwidth", _set((*P, "parentOrderStatus"), _fullwidth)),
    ("time_fullwidth", _set((*P, "updateTime"), _fullwidth)),
    ("key_fullwidth", _set((*P, "parentOrderSn"), lambda v: f"\u3000{v}")),
    ("status_list", _set((*P, "parentOrderStatus"), lambda v: [v])),
    ("status_huge_int", _set((*P, "parentOrderStatus"), raw("huge_int"))),
    ("time_huge_float", _set((*P, "parentOrderTime"), raw("huge_float"))),
    ("key_bad_utf8", _set((*P, "parentOrderSn"), lambda v: raw("bad_utf8", v))),
    ("no_key", _drop((*P, "parentOrderSn"))),
    ("line_text_bad_utf8", _line("goodsName", raw("bad_utf8"))),
    ("line_text_lone_surrogate", _line("goodsName", raw("lone_surrogate"))),
    ("line_quantity_huge_int", _line("quantity", raw("huge_int"))),
    ("line_status_list", _line("orderStatus", lambda v: [v])),
    ("line_no_key", _line("orderSn", None)),
    ("line_object_element", _append_line({"unexpected": {"nested": [1, {"x": None}]}})),
    ("line_scalar_element", _append_line(42)),
)

RETURN_KINDS: tuple[tuple[str, Poison], ...] = (
    ("status_fullwidth", _set(("parentAfterSalesStatus",), _fullwidth)),
    ("time_fullwidth", _set(("updateAt",), _fullwidth)),
    ("key_fullwidth", _set(("parentAfterSalesSn",), lambda v: f"{v}\u3000")),
    ("status_list", _set(("parentAfterSalesStatus",), lambda v: [v])),
    ("status_huge_int", _set(("parentAfterSalesStatus",), raw("huge_int"))),
    ("time_huge_float", _set(("createAt",), raw("huge_float"))),
    ("text_bad_utf8", _set(("parentOrderSn",), raw("bad_utf8"))),
    ("text_lone_surrogate", _set(("parentOrderSn",), raw("lone_surrogate"))),
    ("ops_object_element", _set(("availableOperateList",), [{"op": 10}, 1])),
    ("no_key", _set(("parentAfterSalesSn",), "")),
    # Lines of these returns are poisoned instead (the return itself is clean).
    ("line_no_key", lambda item: None),
    ("line_status_list", lambda item: None),
    ("line_count_huge_int", lambda item: None),
    ("line_text_bad_utf8", lambda item: None),
)

LINE_POISONS: dict[str, Poison] = {
    "line_no_key": _set(("afterSalesSn",), None),
    "line_status_list": _set(("afterSalesStatus",), lambda v: [v]),
    "line_count_huge_int": _set(("applyAfterSalesGoodsNumber",), raw("huge_int")),
    "line_text_bad_utf8": _set(("afterSalesSn",), lambda v: raw("bad_utf8", v)),
}


# Elements of a list of records that are not records at all (a string, a number, null), in
# the order list, the returns list and a return's lines, next to the record (and line) of this
# seq: interface.md wants them set aside in rejected_records and counted, not dropped.
STRAY_SEQ = 5
STRAYS: tuple[Any, ...] = ("not a record", 42, None)


def with_strays(seqs: list[int], items: list[Any]) -> list[Any]:
    """``items`` with the strays after the item of ``STRAY_SEQ``, when the page holds it."""
    if STRAY_SEQ not in seqs:
        return items
    at = seqs.index(STRAY_SEQ) + 1
    return [*items[:at], *STRAYS, *items[at:]]


BOGUS_TOTAL = 10**12


def order_total(orders: Any, updated: tuple[int, int] | None, created: Any, total: int) -> int:
    """The order list, unless filtered by creation time, reports a bogus total (10**12) for
    any update window holding the update second of the shop's first poisoned order: Temu's
    count and its list disagreeing. The pages themselves hold the real records."""
    if created is not None or updated is None or len(orders) <= OFFSET:
        return total
    second = orders.updated[OFFSET]
    return BOGUS_TOTAL if updated[0] <= second <= updated[1] else total


def clean_key(sn: str) -> str:
    """The record a poisoned key (full-width space appended) names: Temu knows it by that key."""
    return sn.rstrip("\u3000")


def kind_of(seq: int, kinds: tuple[tuple[str, Poison], ...]) -> tuple[str, Poison] | None:
    if seq % STRIDE != OFFSET:
        return None
    return kinds[(seq // STRIDE) % len(kinds)]


def poison_item(seq: int, item: dict[str, Any], kinds: tuple[tuple[str, Poison], ...]) -> None:
    found = kind_of(seq, kinds)
    if found is not None:
        found[1](item)


def poison_lines(seq: int, lines: list[dict[str, Any]]) -> None:
    """The first line of a return whose kind poisons its lines."""
    found = kind_of(seq, RETURN_KINDS)
    if found is not None and found[0] in LINE_POISONS and lines:
        LINE_POISONS[found[0]](lines[0])


class _Shop(Protocol):
    orders: Any
    returns: Any


def poisoned(shop: _Shop) -> dict[str, dict[str, str]]:
    """Which records the ``poison`` mode poisons (clean keys) and how, by entity."""
    orders = {}
    for seq in range(len(shop.orders)):
        found = kind_of(seq, ORDER_KINDS)
        if found is not None:
            orders[shop.orders.sn(seq)] = found[0]
    returns = {}
    for rec in shop.returns.records:
        found = kind_of(rec.seq, RETURN_KINDS)
        if found is not None:
            returns[rec.sn] = found[0]
    return {"orders": orders, "returns": returns}
