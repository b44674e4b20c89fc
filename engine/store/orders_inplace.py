"""The update-in-place plan of an orders page: what ``update_orders`` writes, diffed here.

``orders_changed`` answers, for the orders whose content hash differs, the stored row (payload,
row version, ctid, status) and the stored rows of their lines (row version, ctid, status, and
the payload unless the order's own write stored it: then it is the copy in the order's
payload). With that, the engine knows which rows really changed and their changed_fields, and
the statement only writes: updates by ctid as the version read, inserts, changes rows.

Whenever the engine cannot be sure (a value Python compares differently from jsonb, a line key
repeated across the page's orders, a line stored by its order's write but missing from that
order's stored payload), ``plan`` answers None and the page goes through ``write_orders``,
which compares everything in Postgres.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.store import changed_fields
from engine.store.rejected import json_key


@dataclass(slots=True)
class InPlace:
    """``update_orders``'s document; orders in the page's (key-sorted) lock order."""

    # [parentOrderSn, hash (hex), ctid, row version, old status, fields from, to, payload]
    orders: list[list[Any]] = field(default_factory=list)
    # [orderSn, its order (index into orders), index in its orderList, ctid, row version,
    #  old status, fields from, to]
    lines: list[list[Any]] = field(default_factory=list)
    flat: list[str] = field(default_factory=list)  # changed_fields, flat
    expected: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def _bounds(self, fields: list[str] | None) -> tuple[int | None, int | None]:
        if fields is None:
            return None, None
        lo = len(self.flat) + 1  # Postgres arrays count from 1; lo > hi: an empty slice
        self.flat.extend(fields)
        return lo, len(self.flat)

    def order(
        self, sn: str, h: bytes, payload: bytes, row: list[Any], fields: list[str] | None
    ) -> int:
        """``row``: Probed.orders' [payload, row version, ctid, status]."""
        lo, hi = self._bounds(fields)
        tid = row[2]
        self.orders.append([sn, h.hex(), tid, row[1], row[3], lo, hi, orjson.Fragment(payload)])
        self.expected[0 if tid is not None else 1] += 1
        return len(self.orders) - 1

    def line(
        self, key: str, order: int, index: int, row: list[Any] | None, fields: list[str]
    ) -> None:
        """``row``: Probed.lines' [order, key, payload, row version, ctid, status, same]."""
        if row is None:
            self.lines.append([key, order, index, None, None, None, None, None])
            self.expected[3] += 1
            return
        lo, hi = self._bounds(fields)
        self.lines.append([key, order, index, row[4], row[3], row[5], lo, hi])
        self.expected[2] += 1

    def document(self) -> bytes:
        return orjson.dumps({"o": self.orders, "l": self.lines, "f": self.flat, "n": self.expected})


def keyed_lines(payload: Any) -> dict[str, tuple[int, Any]]:
    """A record's lines by orderSn (the last one of a repeated key), with their index."""
    lines = payload.get("orderList") if type(payload) is dict else None
    if not isinstance(lines, list):
        return {}
    out: dict[str, tuple[int, Any]] = {}
    for i, line in enumerate(lines):
        key = json_key(line, "orderSn")
        if key is not None:
            out[key] = (i, line)
    return out


@dataclass(frozen=True, slots=True)
class Probed:
    """``orders_changed``'s answer: the changed orders' stored rows by key
    ([payload, row version, ctid, status]; payload None: new) and their lines' stored rows
    ([order key, line key, payload, row version, ctid, status, same])."""

    orders: dict[str, list[Any]]
    lines: list[list[Any]]

    @classmethod
    def of(cls, row: Any) -> Probed:
        return cls({o[0]: o[1:] for o in row["orders"] or ()}, row["lines"] or [])


def plan(
    sns: Sequence[str],
    hashes: Sequence[bytes],
    payloads: Sequence[bytes],
    items: Sequence[Any],
    had_nul: Sequence[bool],
    probed: Probed,
) -> InPlace | None:
    """The in-place write of the probed orders, or None when Postgres must compare."""
    lines: dict[str, list[Any]] = {}
    for r in probed.lines:
        if r[1] in lines:
            return None  # one stored line asked for by two of the page's orders
        lines[r[1]] = r
    # Python's values compare as jsonb's only for plain records (changed_fields.plain).
    all_plain = not any(had_nul) and changed_fields.plain_all(payloads)
    diff = changed_fields.Diff()
    out = InPlace()
    taken: set[str] = set()
    for i, sn in enumerate(sns):
        row = probed.orders.get(sn)
        if row is None:
            continue  # unchanged (equal hash)
        item, before = items[i], row[0]
        plain = all_plain or (not had_nul[i] and changed_fields.plain(payloads[i]))
        fields: list[str] | None = None
        if before is not None:
            if not plain:
                return None
            fields = diff.order_keys(before, item)
            if not fields:
                continue  # another spelling of the same jsonb: nothing to write
        at = out.order(sn, hashes[i], payloads[i], row, fields)
        old_lines = keyed_lines(before) if before is not None else {}
        for lsn, (index, line) in keyed_lines(item).items():
            if lsn in taken:
                return None  # repeated across the page: which copy wins is for Postgres
            taken.add(lsn)
            stored = lines.get(lsn)
            if stored is None:
                out.line(lsn, at, index, None, [])
                continue
            if not plain:
                return None
            if stored[6]:  # same: the copy in the order's stored payload
                copy = old_lines.get(lsn)
                if copy is None:
                    return None
                old_line = copy[1]
            else:
                old_line = stored[2]
            line_fields = diff.keys(old_line, line)
            if line_fields:  # an unchanged line keeps its row version
                out.line(lsn, at, index, stored, line_fields)
    return out if diff.sure() else None
