"""The orders page writer: compare by content hash first, ship only what changed.

Each order of a page is serialised once, as canonical JSON (sorted keys, so Temu reordering
keys changes nothing), and hashed (sha256). Those bytes are both the hash's input and the
payload sent to Postgres: nothing is serialised twice. A page then takes:

- ``orders_changed``: the keys and hashes only, one primary-key probe per order. A quiet page
  ends here (its cursor moves in the same statement): a no-op pass is reads only;
- ``write_orders``, for the new or changed orders alone: orders, lines, ``changes`` rows and
  the cursor in one statement, so one implicit transaction per page with its cursor.

The counts (distinct keys, skipped records) are computed here from the parsed dicts; the
statement returns only what it inserted and updated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from engine.store.pool import Connection, json_bytes
from engine.store.rejected import json_key

Advance = tuple[str | None, str | None, Any]
NO_ADVANCE: Advance = (None, None, None)


@dataclass(frozen=True, slots=True)
class OrderPage:
    """A page's keyed orders, de-duplicated (the last occurrence wins), in page order."""

    sns: list[str]
    hashes: list[bytes]
    payloads: list[orjson.Fragment]  # the canonical bytes, sent as they are
    line_keys: list[list[str | None]]  # per order, its lines' orderSn (None: no usable key)
    skipped: int  # records without their key

    def only(self, keep: Collection[str]) -> OrderPage:
        idx = [i for i, sn in enumerate(self.sns) if sn in keep]
        return OrderPage(
            [self.sns[i] for i in idx],
            [self.hashes[i] for i in idx],
            [self.payloads[i] for i in idx],
            [self.line_keys[i] for i in idx],
            0,
        )

    def counts(self, excluded: Collection[str] = ()) -> dict[str, int]:
        """Totals over distinct keys, as the statement sees them."""
        keys = {k for lines in self.line_keys for k in lines if k is not None}
        return {
            "orders": len(self.sns),
            "orders_skipped": self.skipped,
            "lines": len(keys - set(excluded)),
            "lines_skipped": sum(1 for lines in self.line_keys for k in lines if k is None),
        }


def without_keys(items: Sequence[Any]) -> bool:
    """Records the writer would skip: they must be set aside (rejected_records), so the page
    takes the careful path (isolation.py)."""
    for item in items:
        if json_key(item, "parentOrderMap", "parentOrderSn") is None:
            return True
        lines = item.get("orderList")
        if isinstance(lines, list) and any(json_key(line, "orderSn") is None for line in lines):
            return True
    return False


def canonical(item: Any) -> bytes:
    """The bytes stored and hashed: sorted keys, U+0000 replaced (see pool.json_bytes)."""
    return json_bytes(item, sort_keys=True)


def _line_keys(item: Mapping[str, Any]) -> list[str | None]:
    lines = item.get("orderList")
    if not isinstance(lines, list):
        return []
    return [json_key(line, "orderSn") for line in lines]


def prepare(items: Sequence[Any]) -> OrderPage:
    last: dict[str, int] = {}
    skipped = 0
    for i, item in enumerate(items):
        sn = json_key(item, "parentOrderMap", "parentOrderSn")
        if sn is None:
            skipped += 1
            continue
        last.pop(sn, None)  # re-inserted: dict order becomes the order of last occurrences
        last[sn] = i
    sns, hashes, payloads, line_keys = [], [], [], []
    sha256 = hashlib.sha256
    for sn, i in last.items():
        data = canonical(items[i])
        sns.append(sn)
        hashes.append(sha256(data).digest())
        payloads.append(orjson.Fragment(data))
        line_keys.append(_line_keys(items[i]))
    return OrderPage(sns, hashes, payloads, line_keys, skipped)


def _result(totals: Mapping[str, int], row: Any) -> dict[str, int]:
    out = dict(totals)
    for name in ("orders_inserted", "orders_updated", "lines_inserted", "lines_updated"):
        out[name] = 0 if row is None else int(row[name])
    return out


async def write_page(
    conn: Connection,
    q: Mapping[str, str],
    shop_id: str,
    page: OrderPage,
    advance: Advance = NO_ADVANCE,
    *,
    excluded: Sequence[str] | None = None,
    compare_first: bool = True,
) -> dict[str, int]:
    """Stores ``page``; the counts by name (``orders``, ``orders_inserted``, ...).

    ``compare_first``: ask which orders changed before sending any payload (the normal path);
    the careful path (isolation.py) sends its pieces whole, inside its own transaction."""
    totals = page.counts(excluded or ())
    todo = page
    if compare_first:
        found = await conn.fetchrow(q["orders_changed"], shop_id, page.sns, page.hashes, *advance)
        assert found is not None
        changed = set(found["changed"])
        if not changed:
            return _result(totals, None)
        todo = page.only(changed)
    row = await conn.fetchrow(
        q["write_orders"],
        shop_id,
        todo.sns,
        todo.hashes,
        todo.payloads,
        *advance,
        None if excluded is None else list(excluded),
    )
    assert row is not None
    return _result(totals, row)
