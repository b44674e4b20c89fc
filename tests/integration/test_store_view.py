"""returns_normalized: the status mapping and the fulfillment columns."""

from __future__ import annotations

import asyncpg
import pytest

from engine.store.store import Store

EXPECTED = {
    1: "requested",
    10: "requested",
    11: "requested",
    8: "approved",
    2: "approved",
    3: "approved",
    4: "approved",
    9: "approved",
    5: "closed",
    6: "cancelled",
    7: "rejected",
}


async def test_every_temu_status_maps(store: Store, pool: asyncpg.Pool) -> None:
    items = [
        {
            "parentAfterSalesSn": f"R-{s}",
            "parentOrderSn": f"PO-{s}",
            "parentAfterSalesStatus": s,
            "afterSalesType": 1 + s % 2,
            "availableOperateList": [1, 10],
            "createAt": 1711009072,
            "updateAt": 1711009999,
        }
        for s in EXPECTED
    ]
    await store.write_returns("s", items)
    rows = await pool.fetch("SELECT * FROM returns_normalized")
    got = {r["temu_status"]: r for r in rows}
    assert {s: r["status"] for s, r in got.items()} == EXPECTED
    assert {s for s, r in got.items() if r["label_awaited"]} == {8}
    assert {r["type"] for r in rows} == {"refund", "return_and_refund"}
    assert got[1]["type"] == "return_and_refund" and got[2]["type"] == "refund"
    assert got[5]["parent_order_sn"] == "PO-5" and got[5]["create_at"] is not None


@pytest.mark.parametrize(
    ("item", "status", "awaited"),
    [
        ({"parentAfterSalesStatus": 99}, "requested", False),
        ({}, "requested", False),
        ({"parentAfterSalesStatus": 8, "availableOperateList": [1]}, "approved", False),
        ({"parentAfterSalesStatus": 8}, "approved", False),
        ({"afterSalesType": 3}, "requested", False),
    ],
)
async def test_unknown_and_partial_returns(
    store: Store, pool: asyncpg.Pool, item: dict[str, object], status: str, awaited: bool
) -> None:
    await store.write_returns("s", [{"parentAfterSalesSn": "R", **item}])
    row = await pool.fetchrow("SELECT * FROM returns_normalized")
    assert (row["status"], row["label_awaited"]) == (status, awaited)
    assert row["temu_status"] == item.get("parentAfterSalesStatus")
    if "afterSalesType" in item:
        assert row["type"] is None


async def test_tracking_comes_from_logistics(store: Store, pool: asyncpg.Pool) -> None:
    await store.write_returns("s", [{"parentAfterSalesSn": "R", "parentAfterSalesStatus": 2}])
    row = await pool.fetchrow("SELECT tracking_number, carrier_name FROM returns_normalized")
    assert tuple(row) == (None, None)
    await store.write_return_logistics(
        "s", "R", {"logisticsInfoList": [{"carrierName": "USPS", "trackingNumber": "9400"}]}
    )
    await store.write_return_logistics(
        "other-shop", "R", {"logisticsInfoList": [{"carrierName": "X", "trackingNumber": "Y"}]}
    )
    rows = await pool.fetch("SELECT tracking_number, carrier_name FROM returns_normalized")
    assert [tuple(r) for r in rows] == [("9400", "USPS")]


async def test_awaiting_label_query(store: Store) -> None:
    await store.write_returns(
        "s",
        [
            {
                "parentAfterSalesSn": "R-1",
                "parentAfterSalesStatus": 8,
                "availableOperateList": [10],
            },
            {"parentAfterSalesSn": "R-2", "parentAfterSalesStatus": 8, "availableOperateList": [1]},
            {
                "parentAfterSalesSn": "R-3",
                "parentAfterSalesStatus": 2,
                "availableOperateList": [10],
            },
        ],
    )
    assert [r["parent_after_sales_sn"] for r in await store.returns_awaiting_label()] == ["R-1"]
    assert await store.returns_awaiting_label("other") == []
