"""The orders page writer: compare by content hash first, ship only what changed.

Each order of a page is serialised once, as canonical JSON (sorted keys, so Temu reordering
keys changes nothing), and hashed (sha256). Those bytes are both the hash's input and the
payload sent to Postgres: nothing is serialised twice. A page then takes:

- ``orders_changed``: the keys and hashes only, one primary-key probe per order. A quiet page
  ends here (its cursor moves in the same statement): a no-op pass is reads only. For the
  orders that differ it answers their stored rows and their lines' rows;
- ``update_orders``, when the engine could diff all of those itself (orders_inplace.py): the
  changed rows are updated in place by ctid as the version read, the new ones inserted, with
  their ``changes`` rows and the cursor, in one statement: Postgres compares nothing;
- ``write_orders`` otherwise (a value only Postgres compares right, a row that moved since the
  read): the same in one statement that looks every row up and compares it itself.

A page expected to be all new skips the first (``insert_orders``: plain inserts; orders_store.py
decides).

The counts (distinct keys, skipped records) are computed here from the parsed dicts; the
statements return only what they inserted and updated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from engine.store import changed_fields, orders_inplace
from engine.store.orders_inplace import keyed_lines
from engine.store.pool import Connection, without_nul
from engine.store.rejected import json_key

Advance = tuple[str | None, str | None, Any]
NO_ADVANCE: Advance = (None, None, None)


@dataclass(frozen=True, slots=True)
class OrderPage:
    """A page's keyed orders, de-duplicated (the last occurrence wins), sorted by key."""

    sns: list[str]
    hashes: list[bytes]
    payloads: list[bytes]  # the canonical bytes, sent as they are (orjson.Fragment)
    items: list[Mapping[str, Any]]
    positions: list[int]  # where each order's kept occurrence stood in the page
    line_keys: list[list[str | None]]  # per order, its lines' orderSn (None: no usable key)
    had_nul: list[bool]  # a U+0000 was replaced: Postgres diffs it (changed_fields.plain)
    skipped: int  # records without their key

    @property
    def complete(self) -> bool:
        """Every order and line has its key (else the page takes the careful path)."""
        return self.skipped == 0 and all(None not in keys for keys in self.line_keys)

    def only(self, keep: Collection[str]) -> OrderPage:
        idx = [i for i, sn in enumerate(self.sns) if sn in keep]
        return OrderPage(
            [self.sns[i] for i in idx],
            [self.hashes[i] for i in idx],
            [self.payloads[i] for i in idx],
            [self.items[i] for i in idx],
            [self.positions[i] for i in idx],
            [self.line_keys[i] for i in idx],
            [self.had_nul[i] for i in idx],
            0,
        )

    def probe_document(self) -> bytes:
        """``orders_changed``'s $2: per order its key, hash (hex) and distinct line keys."""
        return orjson.dumps(
            [
                [sn, h.hex(), list(dict.fromkeys(k for k in keys if k is not None))]
                for sn, h, keys in zip(self.sns, self.hashes, self.line_keys, strict=True)
            ]
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


def canonical(item: Any) -> tuple[bytes, bool]:
    """The bytes stored and hashed (sorted keys, U+0000 replaced: see pool.without_nul), and
    whether a U+0000 was replaced."""
    raw = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    data = without_nul(raw)
    return data, data is not raw


def _line_keys(item: Mapping[str, Any]) -> list[str | None]:
    lines = item.get("orderList")
    if not isinstance(lines, list):
        return []
    return [json_key(line, "orderSn") for line in lines]


def prepare(items: Sequence[Any]) -> OrderPage:
    """Every no-op page pays for this (each order serialised and hashed): the U+0000 check
    runs once over the page, then per order only when it matched."""
    last: dict[str, int] = {}
    skipped = 0
    for i, item in enumerate(items):
        sn = json_key(item, "parentOrderMap", "parentOrderSn")
        if sn is None:
            skipped += 1
            continue
        last[sn] = i
    sns = sorted(last)  # one lock order for every writer (see write_orders)
    positions = [last[sn] for sn in sns]
    kept = [items[i] for i in positions]
    dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS
    payloads = [dumps(item, option=sort) for item in kept]
    had_nul = [False] * len(payloads)
    if b"\\u0000" in b"".join(payloads):
        for n, raw in enumerate(payloads):
            payloads[n], had_nul[n] = canonical(kept[n]) if b"\\u0000" in raw else (raw, False)
    sha256 = hashlib.sha256
    return OrderPage(
        sns,
        [sha256(data).digest() for data in payloads],
        payloads,
        kept,
        positions,
        [_line_keys(item) for item in kept],
        had_nul,
        skipped,
    )


@dataclass(slots=True)
class _Diffed:
    """What the engine diffed, for write_orders: per order the row version it diffed against
    and its changed_fields (bounds into ``flat``); per line the order whose stored payload held
    the old line, the line's index there and its changed_fields."""

    flat: list[str] = field(default_factory=list)
    versions: list[str | None] = field(default_factory=list)
    lo: list[int | None] = field(default_factory=list)
    hi: list[int | None] = field(default_factory=list)
    line_keys: list[str] = field(default_factory=list)
    line_orders: list[str] = field(default_factory=list)
    line_index: list[int] = field(default_factory=list)
    line_lo: list[int] = field(default_factory=list)
    line_hi: list[int] = field(default_factory=list)

    def _bounds(self, fields: list[str]) -> tuple[int, int]:
        lo = len(self.flat) + 1  # Postgres arrays count from 1; lo > hi: an empty slice
        self.flat.extend(fields)
        return lo, len(self.flat)

    def order(self, version: str | None, fields: list[str] | None) -> None:
        if version is None or fields is None:
            self.versions.append(None)
            self.lo.append(None)
            self.hi.append(None)
            return
        lo, hi = self._bounds(fields)
        self.versions.append(version)
        self.lo.append(lo)
        self.hi.append(hi)

    def line(self, key: str, order_sn: str, index: int, fields: list[str]) -> None:
        lo, hi = self._bounds(fields)
        self.line_keys.append(key)
        self.line_orders.append(order_sn)
        self.line_index.append(index)
        self.line_lo.append(lo)
        self.line_hi.append(hi)


def _diffed(page: OrderPage, stored: Mapping[str, list[Any]], excluded: Collection[str]) -> _Diffed:
    """changed_fields of the page's orders and their lines against the stored orders ``stored``
    (by key: [payload, row version, ...], orders_inplace.Probed.orders). A line is diffed
    against the copy in its order's stored payload; the statement checks that the stored line
    is that copy."""
    out = _Diffed()
    # line key -> (its order, the stored copy's index, the stored copy, the new line)
    candidates: dict[str, tuple[str, int, Any, Any] | None] = {}
    for i, sn in enumerate(page.sns):
        item, row = page.items[i], stored.get(sn)
        before = None if row is None else row[0]
        # Only records diffed against a stored version pay for the check.
        plain = (
            before is not None and not page.had_nul[i] and changed_fields.plain(page.payloads[i])
        )
        if row is None or not plain:
            out.order(None, None)
        else:
            out.order(row[1], changed_fields.order_changed_fields(before, item))
        old_lines = keyed_lines(before) if plain else {}
        got = item.get("orderList")
        for line in got if isinstance(got, list) else []:
            lsn = json_key(line, "orderSn")
            if lsn is None or lsn in excluded:
                continue
            if lsn in candidates:
                candidates[lsn] = None  # repeated in the page: which copy wins is for Postgres
                continue
            was = old_lines.get(lsn)
            candidates[lsn] = None if was is None else (sn, was[0], was[1], line)
    for lsn, found in candidates.items():
        if found is None:
            continue
        sn, index, before_line, line = found
        fields = changed_fields.changed_keys(before_line, line)
        if fields is not None:
            out.line(lsn, sn, index, fields)
    return out


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

    ``compare_first``: ask which orders changed before sending any payload (the normal path).
    Without it every order is sent and compared in the write, and changed_fields are all
    computed by Postgres: for the careful path (isolation.py), which writes its pieces inside
    its own transaction."""
    totals = page.counts(excluded or ())
    if not compare_first:
        return _result(totals, await _write_compared(conn, q, shop_id, page, {}, advance, excluded))
    doc = orjson.Fragment(page.probe_document())
    probed = orders_inplace.Probed.of(
        await conn.fetchrow(q["orders_changed"], shop_id, doc, *advance)
    )
    if not probed.orders:
        return _result(totals, None)
    # In place only as a statement of its own: when the rows moved since the read it fails
    # whole, and the page is sent again (inside a caller's transaction it could not be).
    if excluded is None and not conn.is_in_transaction():
        inplace = orders_inplace.plan(
            page.sns, page.hashes, page.payloads, page.items, page.had_nul, probed
        )
        if inplace is not None:
            try:
                return _result(totals, await _update(conn, q, shop_id, inplace, advance))
            except asyncpg.SerializationError:
                pass  # a row moved since the read: compare everything in Postgres
    todo = page.only(probed.orders.keys())
    return _result(
        totals, await _write_compared(conn, q, shop_id, todo, probed.orders, advance, excluded)
    )


async def _update(
    conn: Connection,
    q: Mapping[str, str],
    shop_id: str,
    p: orders_inplace.InPlace,
    advance: Advance,
) -> Any:
    return await conn.fetchrow(q["update_orders"], shop_id, orjson.Fragment(p.document()), *advance)


async def _write_compared(
    conn: Connection,
    q: Mapping[str, str],
    shop_id: str,
    todo: OrderPage,
    old: Mapping[str, list[Any]],
    advance: Advance,
    excluded: Sequence[str] | None,
) -> Any:
    """``write_orders``: Postgres looks every order and line up and compares it; the engine's
    changed_fields (diffed against ``old``, the probed rows) are used where still valid."""
    d = _diffed(todo, old, excluded or ())
    row = await conn.fetchrow(
        q["write_orders"],
        shop_id,
        todo.sns,
        todo.hashes,
        [orjson.Fragment(data) for data in todo.payloads],
        todo.positions,
        d.versions,
        d.lo,
        d.hi,
        d.line_keys,
        d.line_orders,
        d.line_index,
        d.line_lo,
        d.line_hi,
        d.flat,
        *advance,
        None if excluded is None else list(excluded),
    )
    assert row is not None
    return row


async def insert_page(
    conn: Connection, q: Mapping[str, str], shop_id: str, page: OrderPage, advance: Advance
) -> dict[str, int] | None:
    """Stores a page expected to be all new with plain INSERTs; None (nothing written) when an
    order or line key is already stored or repeated in the page."""
    try:
        doc = orjson.dumps(
            [
                [sn, h.hex(), orjson.Fragment(data)]
                for sn, h, data in zip(page.sns, page.hashes, page.payloads, strict=True)
            ]
        )
        row = await conn.fetchrow(q["insert_orders"], shop_id, orjson.Fragment(doc), *advance)
    except asyncpg.UniqueViolationError:
        return None
    return _result(page.counts(), row)
