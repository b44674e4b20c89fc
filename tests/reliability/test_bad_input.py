"""Bad input from Temu, served over HTTP by a test double of the router (temu_double.py) to the
CLI (`backfill --json` as a subprocess). Every odd record is stored (verbatim, or with what
Postgres cannot hold replaced) or skipped with a logged reason; none stops the pass, none
keeps the other records of its page, its window or the other shop from being stored.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from engine.store.pool import quote_ident
from tests.fixtures_proc import run_cli
from tests.reliability.harness import record_figures
from tests.reliability.temu_double import ORDERS, RETURNS, Shop, TemuDouble, double_config

NOW = int(time.time())
SINCE = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 20 * 86400))
LONG_TEXT = "x" * 200_000
UNICODE = "Ünïcødé 漢字 🚀 עברית e\u0301 \u200b\u202e"


def order(sn: Any, ts: int, **parent: Any) -> dict[str, Any]:
    lines = parent.pop(
        "orderList",
        [
            {
                "orderSn": f"{sn}-1",
                "goodsId": 601099548666279,
                "goodsName": "mug",
                "skuId": 17592,
                "orderStatus": 2,
                "quantity": 1,
            },
        ],
    )
    return {
        "parentOrderMap": {
            "parentOrderSn": sn,
            "parentOrderStatus": 2,
            "parentOrderTime": ts - 3600,
            "updateTime": ts,
            **parent,
        },
        "orderList": lines,
    }


def a_return(sn: Any, ts: int, **fields: Any) -> dict[str, Any]:
    return {
        "parentAfterSalesSn": sn,
        "parentOrderSn": f"PO-{sn}",
        "afterSalesType": 2,
        "parentAfterSalesStatus": 10,
        "afterSalesStatusGroup": 1,
        "createAt": ts - 60,
        "updateAt": ts,
        "availableOperateList": [],
        "returnDeliveryType": 3,
        **fields,
    }


def ts(i: int) -> int:
    return NOW - 15 * 86400 + i * 3600


# Orders whose keys are usable: each must be stored exactly as sent (NUL aside, see below).
ODD_ORDERS: dict[str, dict[str, Any]] = {
    "PO-missing": {"parentOrderMap": {"parentOrderSn": "PO-missing"}},  # no times, no lines
    "PO-enum": order(
        "PO-enum",
        ts(2),
        parentOrderStatus=99,
        futureField={"nested": [1, None]},
        orderList=[{"orderSn": "PO-enum-1", "orderStatus": 77, "quantity": 1}],
    ),
    "PO-long": order("PO-long", ts(3), receiptName=LONG_TEXT),
    "PO-unicode": order("PO-unicode", ts(4), receiptName=UNICODE),
    "PO-strnum": order(
        "PO-strnum",
        ts(5),
        parentOrderStatus="4",
        parentOrderTime="1700000000",
        orderList=[
            {
                "orderSn": "PO-strnum-1",
                "goodsId": "601099548666279",
                "skuId": "not-a-number",
                "quantity": "3",
                "orderStatus": "2",
            }
        ],
    ),
    "PO-floats": order(
        "PO-floats",
        ts(6),
        parentOrderStatus=2.5,
        updateTime=1e30,
        orderList=[{"orderSn": "PO-floats-1", "goodsId": 1e30, "quantity": 1.5}],
    ),
    "PO-weird-lines": order("PO-weird-lines", ts(7), orderList={"not": "a list"}),
    "PO-line-nokey": order(
        "PO-line-nokey",
        ts(8),
        orderList=[{"goodsName": "no orderSn"}, "not an object", {"orderSn": "PO-line-nokey-2"}],
    ),
    "90000000001": order(90000000001, ts(9)),  # a number where a string is expected
    # Timestamps no timestamptz can hold (a year in the millions), as string and number.
    "PO-far-future": order(
        "PO-far-future", ts(12), parentOrderTime="999999999999999999", updateTime=1e20
    ),
}
NUL_ORDER = order("PO-nul", ts(10), receiptName="bad\u0000name")
# Records that cannot be stored (no key): skipped, and the log says so.
KEYLESS_ORDERS = [
    {"parentOrderMap": {"parentOrderStatus": 2, "updateTime": ts(11)}, "orderList": []},
    {"parentOrderMap": "garbage", "orderList": []},
    None,
    "a string where an object belongs",
]
GOOD_ORDERS = {f"PO-good-{i}": order(f"PO-good-{i}", ts(20 + i)) for i in range(30)}

ODD_RETURNS: dict[str, dict[str, Any]] = {
    "RA-missing": {"parentAfterSalesSn": "RA-missing"},
    "RA-enum": a_return(
        "RA-enum",
        ts(2),
        parentAfterSalesStatus=42,
        afterSalesType=9,
        availableOperateList=["10", 99, "x", None],
        returnDeliveryType=7,
    ),
    "RA-strnum": a_return(
        "RA-strnum",
        ts(3),
        createAt="1700000000",
        updateAt="soon",
        parentAfterSalesStatus="8",
        availableOperateList="10",
    ),
    "RA-unicode": a_return("RA-unicode", ts(4), reason=UNICODE + LONG_TEXT),
    "RA-nul": a_return("RA-nul", ts(5), reason="nul\u0000inside"),
    "70000000001": a_return(70000000001, ts(6)),
    "RA-far-future": a_return("RA-far-future", ts(7), createAt="99999999999999999", updateAt=-1),
}
GOOD_RETURNS = {f"RA-good-{i}": a_return(f"RA-good-{i}", ts(20 + i)) for i in range(20)}
LINES = {
    "RA-enum": [
        {
            "afterSalesSn": "RA-enum-1",
            "parentAfterSalesSn": "RA-enum",
            "afterSalesStatus": 555,
            "applyAfterSalesGoodsNumber": "2",
        },
        {"parentAfterSalesSn": "RA-enum", "note": "no afterSalesSn"},
    ],
    **{
        sn: [{"afterSalesSn": f"{sn}-1", "parentAfterSalesSn": sn, "goodsId": 1}]
        for sn in GOOD_RETURNS
    },
}


def _fill(d: TemuDouble) -> None:
    bad = Shop(token="tok-bad")
    for i, rec in enumerate([*ODD_ORDERS.values(), NUL_ORDER, *KEYLESS_ORDERS]):
        bad.orders.append((ts(40 + i), rec))
    bad.orders += [(ts(80 + i), rec) for i, rec in enumerate(GOOD_ORDERS.values())]
    bad.returns = [
        (ts(40 + i), rec)
        for i, rec in enumerate([*ODD_RETURNS.values(), {"reason": "no key"}, None])
    ]
    bad.returns += [(ts(80 + i), rec) for i, rec in enumerate(GOOD_RETURNS.values())]
    bad.lines = LINES
    good = Shop(token="tok-good")
    good.orders = [(ts(80 + i), rec) for i, rec in enumerate(GOOD_ORDERS.values())]
    good.returns = [(ts(80 + i), rec) for i, rec in enumerate(GOOD_RETURNS.values())]
    good.lines = LINES
    d.shops = {"bad": bad, "good": good}


def _config(tmp_path: Path, d: TemuDouble, pg_url: str, schema: str) -> Path:
    return double_config(tmp_path, d, pg_url, schema, SINCE)


async def _backfill(tmp_path: Path, cfg: Path, name: str) -> Any:
    return await run_cli(
        tmp_path, name, ["--config", str(cfg), "backfill", "--since", SINCE, "--json"], within=120
    )


async def _payloads(pg_url: str, schema: str, table: str, key: str, shop: str) -> dict[str, Any]:
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            f"SELECT {key} AS k, payload::text AS p FROM "
            f"{quote_ident(schema)}.{table} WHERE shop_id = $1",
            shop,
        )
    finally:
        await conn.close()
    return {r["k"]: orjson.loads(r["p"]) for r in rows}


async def test_odd_records_are_stored_or_skipped_with_a_reason(
    double: TemuDouble, pg_url: str, schema: str, tmp_path: Path
) -> None:
    _fill(double)
    cfg = _config(tmp_path, double, pg_url, schema)
    bf = await _backfill(tmp_path, cfg, "backfill")
    assert bf.returncode == 0, bf.stderr[-3000:]
    assert bf.summary()["shops_failed"] == []

    orders = await _payloads(pg_url, schema, "orders", "parent_order_sn", "bad")
    want = {**ODD_ORDERS, **GOOD_ORDERS}
    assert set(orders) == {*want, "PO-nul"}, sorted(set(orders) ^ {*want, "PO-nul"})
    for sn, rec in want.items():
        assert orders[sn] == rec, f"{sn} not stored verbatim"
    # Postgres jsonb cannot hold U+0000: it becomes U+FFFD, the rest stays as sent.
    assert orders["PO-nul"]["parentOrderMap"]["receiptName"] == "bad\ufffdname"
    good = await _payloads(pg_url, schema, "orders", "parent_order_sn", "good")
    assert good == GOOD_ORDERS

    lines = await _payloads(pg_url, schema, "order_lines", "order_sn", "bad")
    assert {"PO-enum-1", "PO-strnum-1", "PO-floats-1", "PO-line-nokey-2", "90000000001-1"} <= set(
        lines
    )
    returns = await _payloads(pg_url, schema, "returns", "parent_after_sales_sn", "bad")
    assert set(returns) == {*ODD_RETURNS, *GOOD_RETURNS}
    for sn, rec in {**ODD_RETURNS, **GOOD_RETURNS}.items():
        if sn != "RA-nul":
            assert returns[sn] == rec, f"{sn} not stored verbatim"
    rlines = await _payloads(pg_url, schema, "return_lines", "after_sales_sn", "bad")
    assert {"RA-enum-1", *(f"{sn}-1" for sn in GOOD_RETURNS)} <= set(rlines)

    conn = await asyncpg.connect(pg_url)
    try:
        typed = {
            r["parent_order_sn"]: dict(r)
            for r in await conn.fetch(
                f"SELECT parent_order_sn, parent_order_status, parent_order_time, update_time "
                f"FROM {quote_ident(schema)}.orders WHERE shop_id = 'bad'"
            )
        }
        rtyped = {
            r["parent_after_sales_sn"]: dict(r)
            for r in await conn.fetch(
                f"SELECT parent_after_sales_sn, status, available_operations, create_at, update_at "
                f"FROM {quote_ident(schema)}.returns WHERE shop_id = 'bad'"
            )
        }
    finally:
        await conn.close()
    # Typed columns: a numeric string is a number; garbage is NULL, never a wrong value.
    assert typed["PO-strnum"]["parent_order_status"] == 4
    assert typed["PO-enum"]["parent_order_status"] == 99
    assert typed["PO-floats"]["parent_order_status"] is None
    assert typed["PO-missing"]["update_time"] is None
    assert rtyped["RA-strnum"]["status"] == 8 and rtyped["RA-strnum"]["update_at"] is None
    assert rtyped["RA-enum"]["available_operations"] == [10, 99]
    assert typed["PO-far-future"]["parent_order_time"] is None
    assert typed["PO-far-future"]["update_time"] is None
    assert rtyped["RA-far-future"]["create_at"] is None

    log = bf.stderr
    assert "skipped" in log and "parentOrderSn" in log, log[-3000:]
    assert "parentAfterSalesSn" in log, log[-3000:]
    assert "U+0000" in log, log[-3000:]
    record_figures(
        "bad_records",
        {
            "orders": len(ODD_ORDERS) + 1 + len(KEYLESS_ORDERS),
            "returns": len(ODD_RETURNS) + 2,
            "lines": 5,
        },
    )


def _twice(hook_first: dict[tuple[Any, ...], int]) -> Any:
    """Counts how often each (api_type, window, page) was asked for."""

    def key(api_type: str, p: dict[str, Any]) -> tuple[Any, ...]:
        return (
            api_type,
            p["updateAtStart"],
            p["updateAtEnd"],
            p.get("pageNumber", p.get("pageNo")),
        )

    def seen(api_type: str, p: dict[str, Any]) -> int:
        k = key(api_type, p)
        hook_first[k] = hook_first.get(k, 0) + 1
        return hook_first[k]

    return seen


PAGE_PROBLEMS = [
    "duplicate record",
    "empty page before total",
    "total as string",
    "list not a list (once)",
    "item list holds garbage",
]


@pytest.mark.parametrize("problem", PAGE_PROBLEMS)
async def test_page_level_problems_do_not_lose_records(
    problem: str, double: TemuDouble, pg_url: str, schema: str, tmp_path: Path
) -> None:
    good = Shop(token="tok-good")
    good.orders = [(ts(80 + i), rec) for i, rec in enumerate(GOOD_ORDERS.values())]
    good.returns = [(ts(80 + i), rec) for i, rec in enumerate(GOOD_RETURNS.values())]
    good.lines = LINES
    bad = Shop(token="tok-bad", orders=list(good.orders), returns=list(good.returns), lines=LINES)
    double.shops = {"bad": bad, "good": good}
    seen = _twice({})
    fired: Counter[str] = Counter()

    def hook(api_type: str, p: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        changed = _page_problem(api_type, p, result)
        if changed is not result:
            fired[api_type] += 1
        return changed

    def _page_problem(api_type: str, p: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        if p["access_token"] != "tok-bad" or api_type not in (ORDERS, RETURNS):
            return result
        items_key = "pageItems" if api_type == ORDERS else "data"
        total_key = "totalItemNum" if api_type == ORDERS else "total"
        page = p.get("pageNumber", p.get("pageNo"))
        n = seen(api_type, p)
        if problem == "duplicate record" and page == 1 and result[items_key]:
            return {**result, items_key: [*result[items_key], result[items_key][0]]}
        if problem == "empty page before total" and page == 2:
            return {**result, items_key: []}  # every time: the window must be cut smaller
        if problem == "total as string":
            return {**result, total_key: str(result[total_key])}
        if problem == "list not a list (once)" and n == 1:
            return {**result, items_key: {"unexpected": "object"}}
        if problem == "item list holds garbage" and page == 1:
            return {**result, items_key: [None, 42, *result[items_key], "x"]}
        return result

    double.hook = hook
    cfg = _config(tmp_path, double, pg_url, schema)
    bf = await _backfill(tmp_path, cfg, "backfill")
    assert bf.returncode == 0, bf.stderr[-3000:]
    # The problem was served on both streams' pages (else the case proves nothing).
    assert fired[ORDERS] and fired[RETURNS], f"{problem}: the hook never fired: {fired}"
    for shop in ("bad", "good"):
        orders = await _payloads(pg_url, schema, "orders", "parent_order_sn", shop)
        assert orders == GOOD_ORDERS, f"{problem}: {shop} orders differ"
        returns = await _payloads(pg_url, schema, "returns", "parent_after_sales_sn", shop)
        assert returns == GOOD_RETURNS, f"{problem}: {shop} returns differ"
    conn = await asyncpg.connect(pg_url)
    try:
        dup = await conn.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM {quote_ident(schema)}.changes "
            "WHERE op = 'insert' GROUP BY shop_id, entity, entity_key HAVING count(*) > 1) d"
        )
    finally:
        await conn.close()
    assert dup == 0, problem


async def test_persistently_malformed_list_fails_that_shop_only(
    double: TemuDouble, pg_url: str, schema: str, tmp_path: Path
) -> None:
    _fill(double)

    fired: Counter[str] = Counter()

    def hook(api_type: str, p: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        if p["access_token"] == "tok-bad" and api_type == ORDERS:
            fired[api_type] += 1
            return {"totalItemNum": "many", "pageItems": "not a list"}
        return result

    double.hook = hook
    cfg = _config(tmp_path, double, pg_url, schema)
    bf = await _backfill(tmp_path, cfg, "backfill")
    assert fired[ORDERS], "the malformed page was never served"
    assert bf.returncode == 3, bf.stderr[-3000:]
    assert bf.summary()["shops_failed"] == ["bad"]
    assert "malformed" in bf.stderr and "bg.order.list.v2.get shop=bad" in bf.stderr
    assert await _payloads(pg_url, schema, "orders", "parent_order_sn", "good") == GOOD_ORDERS
    # The bad shop's other stream was not held up by its orders stream.
    returns = await _payloads(pg_url, schema, "returns", "parent_after_sales_sn", "bad")
    assert set(returns) == {*ODD_RETURNS, *GOOD_RETURNS}


async def test_unexpected_exception_in_a_stream_fails_that_shop_only(
    double: TemuDouble, pg_url: str, schema: str, tmp_path: Path
) -> None:
    """Issue 12: an exception that is not a TemuError (here the RecursionError of decoding a
    page nested 3000 deep, or whatever else a stream may raise) must not end the other shops'
    runs: exit 3, shops_failed names the shop, status shows the error. (A status that is a JSON
    list, the first example, is now stored with a NULL status.)"""
    _fill(double)

    fired: Counter[str] = Counter()

    def hook(api_type: str, p: dict[str, Any], result: Any) -> Any:
        if p["access_token"] == "tok-bad" and api_type == RETURNS and result.get("data"):
            fired[api_type] += 1
            return b'{"total":1,"pageNumber":1,"data":[' + b"[" * 3000 + b"]" * 3000 + b"]}"
        return result

    double.hook = hook
    cfg = _config(tmp_path, double, pg_url, schema)
    for name, args in (
        ("backfill", ["backfill", "--since", SINCE, "--json"]),
        ("once", ["run", "--once", "--json"]),
    ):
        served = fired[RETURNS]
        done = await run_cli(tmp_path, name, ["--config", str(cfg), *args], within=120)
        assert fired[RETURNS] > served, f"{name}: the odd return was never served"
        assert done.returncode == 3, done.stderr[-3000:]
        assert done.summary()["shops_failed"] == ["bad"]
        assert await _payloads(pg_url, schema, "orders", "parent_order_sn", "good") == GOOD_ORDERS
    status = await run_cli(
        tmp_path, "status", ["--config", str(cfg), "status", "--json"], within=60
    )
    text = status.stdout
    assert "RecursionError" in text and "bad" in text, text[-3000:]
