"""One truth check for every synced table: where Postgres differs from the simulator's data.

Orders, order lines, returns, return lines and return logistics, every shop, payload by
payload. What a table should hold is decided from the simulator alone (never from the
engine's own rules, e.g. which returns it thinks need logistics): a return whose package has
tracking at Temu must have exactly that ``logisticsInfoList`` stored; a return without
tracking may have no row or an empty list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from engine.sim.server import Simulator
from engine.store.pool import quote_ident

STREAMS: tuple[str, ...] = ("orders", "returns")


async def _stored(
    conn: asyncpg.Connection, schema: str, table: str, key: str, shop: str
) -> dict[str, Any]:
    rows = await conn.fetch(
        f"SELECT {key} AS k, payload::text AS p FROM {quote_ident(schema)}.{table} "
        "WHERE shop_id = $1",
        shop,
    )
    return {r["k"]: orjson.loads(r["p"]) for r in rows}


def compare(what: str, truth: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    """Missing, unexpected and stale keys (with the fields of the first stale one)."""
    out = []
    missing = sorted(truth.keys() - stored.keys())
    extra = sorted(stored.keys() - truth.keys())
    stale = sorted(k for k in truth.keys() & stored.keys() if truth[k] != stored[k])
    for label, keys in (("missing", missing), ("unexpected", extra), ("stale", stale)):
        if keys:
            out.append(f"{what}: {len(keys)} {label} (e.g. {keys[:3]})")
    if stale:
        k = stale[0]
        if isinstance(truth[k], dict) and isinstance(stored[k], dict):
            fields = {
                f: (stored[k].get(f), truth[k].get(f))
                for f in set(truth[k]) | set(stored[k])
                if truth[k].get(f) != stored[k].get(f)
            }
            out.append(f"{what}: {k} stored vs truth: {fields}")
        else:
            out.append(f"{what}: {k} stored {stored[k]!r} vs truth {truth[k]!r}")
    return out


async def truth_differences(
    conn: asyncpg.Connection,
    schema: str,
    sim: Simulator,
    *,
    streams: Sequence[str] = STREAMS,
    shops: Sequence[str] | None = None,
) -> list[str]:
    """Every way Postgres differs from the simulator's truth; empty when they are equal."""
    problems: list[str] = []
    for sid in shops if shops is not None else [s.shop_id for s in sim.config.shops]:
        if "orders" in streams:
            orders = sim.truth_orders(sid)
            problems += compare(
                f"{sid} orders",
                {o["parentOrderMap"]["parentOrderSn"]: o for o in orders},
                await _stored(conn, schema, "orders", "parent_order_sn", sid),
            )
            problems += compare(
                f"{sid} order lines",
                {line["orderSn"]: line for o in orders for line in o["orderList"]},
                await _stored(conn, schema, "order_lines", "order_sn", sid),
            )
        if "returns" not in streams:
            continue
        returns = sim.truth_returns(sid)
        problems += compare(
            f"{sid} returns",
            {r["parentAfterSalesSn"]: r for r in returns},
            await _stored(conn, schema, "returns", "parent_after_sales_sn", sid),
        )
        problems += compare(
            f"{sid} return lines",
            {x["afterSalesSn"]: x for x in sim.truth_return_lines(sid)},
            await _stored(conn, schema, "return_lines", "after_sales_sn", sid),
        )
        logistics = sim.truth_logistics(sid)
        stored = await _stored(conn, schema, "return_logistics", "parent_after_sales_sn", sid)
        problems += compare(
            f"{sid} return logistics",
            {sn: entries for sn, entries in logistics.items() if entries},
            # An empty list stored for a known return says "no tracking yet": no row at all.
            {sn: p for sn, p in stored.items() if p or sn not in logistics},
        )
    return problems
