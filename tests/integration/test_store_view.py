"""returns_normalized: the status mapping and the fulfillment columns."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from engine.reconcile.tasks import UPLOAD_LABEL, upload_key
from engine.store.outbox import Outbox
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


async def test_return_items_and_the_buyers_logistic_mode(store: Store, pool: asyncpg.Pool) -> None:
    await store.write_returns(
        "s",
        [
            {"parentAfterSalesSn": "R", "parentAfterSalesStatus": 2, "returnDeliveryType": 4},
            {"parentAfterSalesSn": "Q", "parentAfterSalesStatus": 1, "returnDeliveryType": 3},
            {"parentAfterSalesSn": "P", "parentAfterSalesStatus": 1},
        ],
    )
    line = {"parentAfterSalesSn": "R", "goodsId": 601, "skuId": 175, "afterSalesStatus": 2}
    await store.write_return_lines(
        "s",
        [
            {**line, "afterSalesSn": "R-2", "applyAfterSalesGoodsNumber": 1, "productSkuId": 9},
            {**line, "afterSalesSn": "R-1", "applyAfterSalesGoodsNumber": 3},
        ],
    )
    await store.write_return_lines("other-shop", [{**line, "afterSalesSn": "R-9"}])
    rows = {
        r["parent_after_sales_sn"]: r
        for r in await pool.fetch("SELECT * FROM returns_normalized WHERE shop_id = 's'")
    }
    assert rows["R"]["return_items"] == [
        {
            "returnItemId": "R-1",
            "quantity": 3,
            "goodsId": 601,
            "skuId": 175,
            "productSkuId": None,
            "temuStatus": 2,
        },
        {
            "returnItemId": "R-2",
            "quantity": 1,
            "goodsId": 601,
            "skuId": 175,
            "productSkuId": 9,
            "temuStatus": 2,
        },
    ]
    assert rows["Q"]["return_items"] == [] and rows["P"]["return_items"] == []
    assert [rows[sn]["logistic_mode"] for sn in "RQP"] == ["pickUp", "dropOff", None]


async def test_the_uploaded_label_is_the_fulfillment_until_temu_shows_its_own(
    store: Store, pool: asyncpg.Pool
) -> None:
    outbox = Outbox(pool)
    await store.write_returns(
        "s", [{"parentAfterSalesSn": sn, "parentAfterSalesStatus": 8} for sn in ("R", "D", "N")]
    )
    label = {"tracking_number": "1Z9", "carrier_name": "UPS", "file_url": "https://x/l.pdf"}
    for sn in ("R", "D"):
        await outbox.enqueue(UPLOAD_LABEL, upload_key("s", sn), {"sn": sn, "label": label})
    r_task, d_task = await outbox.claim([UPLOAD_LABEL], limit=2, lease_s=60, owner="t")
    uploaded = {"outcome": "uploaded", "tracking_number": "1Z9", "file_url": "https://x/l.pdf"}
    assert await outbox.complete(r_task.id, uploaded)
    assert await outbox.fail(d_task.id, "Temu refused: 130010006", max_attempts=1, backoff_s=0)

    def view() -> Any:
        return pool.fetch(
            "SELECT parent_after_sales_sn AS sn, label_state, label_outcome, label_url,"
            " label_error, tracking_number, carrier_name FROM returns_normalized ORDER BY 1"
        )

    got = {r["sn"]: dict(r) for r in await view()}
    assert got["R"] == {
        "sn": "R",
        "label_state": "done",
        "label_outcome": "uploaded",
        "label_url": "https://x/l.pdf",
        "label_error": None,
        "tracking_number": "1Z9",
        "carrier_name": "UPS",
    }
    assert (got["D"]["label_state"], got["D"]["label_error"]) == ("dead", "Temu refused: 130010006")
    assert got["D"]["label_url"] is None and got["D"]["tracking_number"] is None
    assert got["N"]["label_state"] is None and got["N"]["tracking_number"] is None

    # Once Temu's reverse logistics show a tracking number, that is the fulfillment's.
    await store.write_return_logistics(
        "s", "R", {"logisticsInfoList": [{"carrierName": "USPS", "trackingNumber": "9400"}]}
    )
    got = {r["sn"]: dict(r) for r in await view()}
    assert (got["R"]["tracking_number"], got["R"]["carrier_name"]) == ("9400", "USPS")
    assert got["R"]["label_url"] == "https://x/l.pdf"

    # Temu asks for a label again: the task is pending again and its old upload is history.
    await pool.execute("UPDATE outbox SET state = 'pending' WHERE id = $1", r_task.id)
    got = {r["sn"]: dict(r) for r in await view()}
    assert (got["R"]["label_state"], got["R"]["label_outcome"], got["R"]["label_url"]) == (
        "pending",
        None,
        None,
    )
