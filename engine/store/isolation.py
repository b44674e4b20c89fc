"""The careful path of the diff writers: one transaction that stores what can be stored, sets
aside the rest (``rejected_records``) and moves the cursor. Taken only when a page holds a
record without its key or its set-based write failed on the data (see rejected.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg

from engine.store import orders_write
from engine.store.pool import Connection
from engine.store.rejected import Rejected, isolable, isolate, json_key, save_rejected

Advance = tuple[str | None, str | None, Any]


async def _probe(conn: Connection, write: Callable[[], Awaitable[Any]]) -> str | None:
    """Runs a write in a savepoint that is always rolled back: the failure reason or None."""
    tr = conn.transaction()
    await tr.start()
    try:
        await write()
        return None
    except Exception as exc:
        if not isolable(exc):
            raise
        return f"{type(exc).__name__}: {exc}"
    finally:
        await tr.rollback()


async def _finish(
    conn: Connection,
    q: Mapping[str, str],
    shop_id: str,
    advance: Advance,
    rejected: Sequence[Rejected],
) -> None:
    await save_rejected(conn, q["save_rejected"], shop_id, rejected)
    stream, kind, position = advance
    if stream is not None:
        await conn.fetchval(q["advance_cursor"], shop_id, stream, kind, position)


def _line_keys(item: Any) -> list[str]:
    lines = item.get("orderList") if isinstance(item, dict) else None
    if not isinstance(lines, list):
        return []
    return [k for k in (json_key(line, "orderSn") for line in lines) if k is not None]


async def write_orders(
    pool: asyncpg.Pool, q: Mapping[str, str], shop_id: str, items: list[Any], advance: Advance
) -> tuple[list[Mapping[str, int]], list[Rejected]]:
    rejected: list[Rejected] = []
    for item in items:
        key = json_key(item, "parentOrderMap", "parentOrderSn")
        if key is None:
            rejected.append(Rejected("order", None, "no parentOrderMap.parentOrderSn", item))
            continue
        lines = item.get("orderList")
        for line in lines if isinstance(lines, list) else []:
            if json_key(line, "orderSn") is None:
                rejected.append(Rejected("order_line", None, f"no orderSn (order {key})", line))

    def piece_writer(
        conn: Connection, piece: list[Any], excluded: list[str] | None = None
    ) -> Callable[[], Awaitable[Mapping[str, int]]]:
        # Pieces are sent whole (no hash comparison first): this transaction is already rare.
        # Prepared inside the call, so a record that cannot be serialised fails as a write.
        async def run() -> Mapping[str, int]:
            page = orders_write.prepare(piece)
            return await orders_write.write_page(
                conn, q, shop_id, page, excluded=excluded, compare_first=False
            )

        return run

    async def write(conn: Connection, piece: list[Any]) -> Mapping[str, int]:
        return await piece_writer(conn, piece)()

    async def single(
        conn: Connection, item: Any, reason: str
    ) -> tuple[list[Mapping[str, int]], list[Rejected]]:
        # The order alone first; then which of its lines fail (interface.md: an order whose
        # line cannot be stored is itself still stored, and so are its other lines).
        key = json_key(item, "parentOrderMap", "parentOrderSn")
        sns = _line_keys(item)
        if await _probe(conn, piece_writer(conn, [item], sns)) is not None:
            return [], [Rejected("order", key, reason, item)]
        bad: list[Rejected] = []
        bad_sns: list[str] = []
        lines = [ln for ln in item.get("orderList") or [] if json_key(ln, "orderSn")]
        for sn, line in zip(sns, lines, strict=False):
            others = [s for s in sns if s != sn]
            why = await _probe(conn, piece_writer(conn, [item], others))
            if why is not None:
                bad_sns.append(sn)
                bad.append(Rejected("order_line", sn, why, line))
        try:
            async with conn.transaction():
                row = await piece_writer(conn, [item], bad_sns)()
        except Exception as exc:
            if not isolable(exc):
                raise
            return [], [Rejected("order", key, reason, item)]
        return [row], bad

    async with pool.acquire() as conn, conn.transaction():
        rows, failed = await isolate(conn, items, write, single)
        rejected.extend(failed)
        await _finish(conn, q, shop_id, advance, rejected)
    return rows, rejected


async def write_returns_bundle(
    pool: asyncpg.Pool,
    q: Mapping[str, str],
    shop_id: str,
    items: list[Any],
    lines: list[Any],
    logistics: Mapping[str, Any],
    advance: Advance,
) -> tuple[list[asyncpg.Record], list[asyncpg.Record], list[Rejected]]:
    rejected: list[Rejected] = [
        Rejected("return", None, "no parentAfterSalesSn", i)
        for i in items
        if json_key(i, "parentAfterSalesSn") is None
    ]
    rejected += [
        Rejected("return_line", None, "no afterSalesSn", line)
        for line in lines
        if json_key(line, "afterSalesSn") is None
    ]

    def writer(name: str, extra: tuple[Any, ...]) -> Any:
        async def write(conn: Connection, piece: list[Any]) -> asyncpg.Record:
            row = await conn.fetchrow(q[name], shop_id, piece, *extra)
            assert row is not None
            return row

        return write

    def rejecter(entity: str, key: str) -> Any:
        async def single(
            conn: Connection, item: Any, reason: str
        ) -> tuple[list[asyncpg.Record], list[Rejected]]:
            return [], [Rejected(entity, json_key(item, key), reason, item)]

        return single

    async with pool.acquire() as conn, conn.transaction():
        line_rows, bad = await isolate(
            conn, lines, writer("write_return_lines", ()), rejecter("return_line", "afterSalesSn")
        )
        rejected += bad
        for sn, info in logistics.items():
            why = None
            try:
                async with conn.transaction():
                    await conn.fetchrow(q["write_return_logistics"], shop_id, sn, info)
            except Exception as exc:
                if not isolable(exc):
                    raise
                why = f"logistics: {type(exc).__name__}: {exc}"
            if why is not None:
                rejected.append(Rejected("return", sn, why, info))
        rows, bad = await isolate(
            conn,
            items,
            writer("write_returns", (None, None, None)),
            rejecter("return", "parentAfterSalesSn"),
        )
        rejected += bad
        await _finish(conn, q, shop_id, advance, rejected)
    return rows, line_rows, rejected
