"""Shared by the reliability suite: quick/long mode, truth comparison, at-most-once checks
(the CLI runs through tests/fixtures_proc.py, the truth check is tests/truth.py).

Quick mode (default) keeps the whole suite within about two minutes on a 2-core CI machine;
``TEMU_SYNC_LONG=1`` runs more trials and more data (the figures quoted in the README's
"Reliability" section come from that mode).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import asyncpg
import orjson

from engine.app.sim_settings import config_toml_for_simulator
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from engine.store.pool import quote_ident

LONG = os.environ.get("TEMU_SYNC_LONG") == "1"
# Where the tests append their figures (JSON lines) for the README's Reliability section.
FIGURES_FILE = os.environ.get("TEMU_SYNC_FIGURES", "")


def record_figures(name: str, figures: dict[str, Any]) -> None:
    if FIGURES_FILE:
        with open(FIGURES_FILE, "ab") as f:
            f.write(orjson.dumps({"test": name, "long": LONG, **figures}) + b"\n")


def scaled(quick: int, long: int) -> int:
    return long if LONG else quick


def sim_toml(
    sim: Simulator,
    config: SimConfig,
    *,
    db_url: str,
    schema: str,
    extra: str = "",
    oc_qps: float = 200.0,
    app_extra: str = "",
) -> str:
    """A config.toml for the CLI pointing at ``sim``; OC paced fast (its 5/s default would only
    make trials slow, it is not what is under test); ``app_extra`` goes into every [[apps]]."""
    text = config_toml_for_simulator(sim, config, database_url=db_url, schema=schema, extra=extra)
    if app_extra:
        text = text.replace("[[apps]]\n", f"[[apps]]\n{app_extra.strip()}\n")
    return text.replace("[orange_connex]\n", f"[orange_connex]\nqps = {oc_qps}\n", 1)


async def drop_schema(pg_url: str, schema: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


async def duplicate_inserts(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Keys with more than one ``insert`` change, and entities whose insert count differs from
    their row count: a record written twice as new, or stored without its change."""
    rows = await conn.fetch(
        f"SELECT shop_id, entity, entity_key, count(*) AS n FROM {quote_ident(schema)}.changes "
        "WHERE op = 'insert' GROUP BY 1, 2, 3 HAVING count(*) > 1 LIMIT 5"
    )
    problems = [
        f"{r['entity']} {r['shop_id']}/{r['entity_key']} inserted {r['n']} times" for r in rows
    ]
    tables = {
        "order": "orders",
        "order_line": "order_lines",
        "return": "returns",
        "return_line": "return_lines",
    }
    inserts = Counter(
        {
            r["entity"]: r["n"]
            for r in await conn.fetch(
                f"SELECT entity, count(*) AS n FROM {quote_ident(schema)}.changes "
                "WHERE op = 'insert' GROUP BY 1"
            )
        }
    )
    for entity, table in tables.items():
        n = await conn.fetchval(f"SELECT count(*) FROM {quote_ident(schema)}.{table}")
        if n != inserts[entity]:
            problems.append(f"{table}: {n} rows but {inserts[entity]} insert changes")
    return problems


# Refusals before the request reached the upload itself: nothing was attempted twice.
GATEWAY_REFUSALS = ("rate_limited", "token", "unauthorized")


def repeated_uploads(attempts: list[dict[str, Any]]) -> dict[str, int]:
    """Per return, upload attempts that reached Temu's handler after one was accepted: a second
    push for one request, whether Temu refused it (already uploaded, no longer awaiting a
    label) or not. Gateway refusals (rate limit, token, injected faults) do not count."""
    accepted: set[str] = set()
    repeats: Counter[str] = Counter()
    for a in sorted(attempts, key=lambda a: float(a.get("at") or 0)):
        sn = str(a.get("parentAfterSalesSn"))
        reason = str(a.get("reason") or "")
        if reason in GATEWAY_REFUSALS or reason.startswith("fault:"):
            continue
        if sn in accepted:
            repeats[sn] += 1
        elif a.get("outcome") == "accepted":
            accepted.add(sn)
    return dict(repeats)


def at_most_once(sim: Simulator) -> list[str]:
    """Label uploads accepted more than once for a return, or tried again after one was
    accepted (refused ones included: the simulator logs every attempt); OC pushes applied
    more than once or refused as already done."""
    problems = []
    again_after_accept = repeated_uploads(sim.upload_attempts())
    if again_after_accept:
        problems.append(f"uploads tried again after one was accepted: {again_after_accept}")
    cancelled_twice = [
        a.get("orderNumber")
        for a in sim.oc_attempts()
        if a.get("outcome") == "refused" and a.get("reason") == "already_cancelled"
    ]
    if cancelled_twice:
        problems.append(f"OC CANCEL sent again for: {cancelled_twice[:5]}")
    uploads = Counter(u["parentAfterSalesSn"] for u in sim.uploads())
    twice = {sn: n for sn, n in uploads.items() if n > 1}
    if twice:
        problems.append(f"labels uploaded more than once: {twice}")
    pushes = Counter(
        orjson.dumps(_push_identity(p), option=orjson.OPT_SORT_KEYS) for p in sim.oc_pushes()
    )
    again = [k.decode() for k, n in pushes.items() if n > 1]
    if again:
        problems.append(f"OC pushes applied more than once: {again[:3]}")
    return problems


def _push_identity(push: dict[str, Any]) -> dict[str, Any]:
    # What makes a push "the same update": the RMA, the operation and the tracking it carries;
    # its messageId is left out on purpose (a retry with a fresh id would still be a repeat).
    keys = ("orderNumber", "operation", "trackingNumber", "carrierName")
    return {k: push.get(k) for k in keys}
