"""Reconciler pieces without network or database: schedules, warehouses, carriers, message ids."""

from __future__ import annotations

from typing import Any

import pytest

from engine.oc.client import Rma
from engine.reconcile.carriers import CarrierDirectory, UnknownCarrier, region_of
from engine.reconcile.executor import exponential_backoff
from engine.reconcile.oc_rmas import open_rmas, push_message_id
from engine.reconcile.upload_label import LabelProblem, _schedule, _warehouse, normalize_mode
from engine.reconcile.wiring import poll_schedule

CARRIERS = [{"carrierId": 1, "carrierName": "UPS"}, {"carrierId": 2, "carrierName": "FedEx"}]


def test_pick_up_uses_the_buyers_first_slot_else_the_merchants_latest_time() -> None:
    slots = [{"startTimestamp": 10, "endTimestamp": 20}, {"startTimestamp": 30, "endTimestamp": 40}]
    assert _schedule({"userSelectedPickUpTimeList": slots, "merchantLatestPickUpTime": 99}) == {
        "pickUpTimeScheduleMode": 1,
        "startTimestamp": 10,
        "endTimestamp": 20,
    }
    assert _schedule({"userSelectedPickUpTimeList": [], "merchantLatestPickUpTime": 99}) == {
        "pickUpTimeScheduleMode": 3,
        "latestTimestamp": 99,
    }
    with pytest.raises(LabelProblem):
        _schedule({})


def test_warehouse_is_the_location_given_else_the_first() -> None:
    prepared = {"availableReturnWarehouseList": [{"warehouseId": "A"}, {"warehouseId": "B"}]}
    assert _warehouse(prepared, None) == "A"
    assert _warehouse(prepared, "B") == "B"
    with pytest.raises(LabelProblem, match="not one of the return's warehouses"):
        _warehouse(prepared, "C")
    with pytest.raises(LabelProblem, match="no return warehouse"):
        _warehouse({}, None)


def test_logistic_mode_is_case_insensitive() -> None:
    assert normalize_mode("DROPOFF") == normalize_mode("drop_off") == "dropOff"
    assert normalize_mode("pickup") == "pickUp"
    assert normalize_mode("teleport") is None


async def test_carriers_are_fetched_once_per_region_and_names_mapped() -> None:
    calls: list[int] = []

    async def fetch(region: int) -> list[dict[str, Any]]:
        calls.append(region)
        return CARRIERS

    d = CarrierDirectory()
    assert (
        await d.resolve(carrier_id=None, carrier_name="Fed Ex", region_id=211, fetch=fetch) == "2"
    )
    assert await d.resolve(carrier_id="1", carrier_name=None, region_id=211, fetch=fetch) == "1"
    with pytest.raises(UnknownCarrier, match="unknown carrier id"):
        await d.resolve(carrier_id="7", carrier_name=None, region_id=211, fetch=fetch)
    with pytest.raises(UnknownCarrier, match="Pigeon"):
        await d.resolve(carrier_id=None, carrier_name="Pigeon", region_id=211, fetch=fetch)
    assert calls == [211]


def test_region_comes_from_the_order_else_the_order_number() -> None:
    assert region_of(37, "PO-211-1") == 37
    assert region_of(None, "PO-211-123") == 211
    assert region_of(None, "X-1") is None


def test_message_id_of_a_push_is_stable_and_differs_per_rma() -> None:
    base = "0f" * 16
    assert push_message_id(base, "OC1") == push_message_id(base, "OC1")
    assert push_message_id(base, "OC1") != push_message_id(base, "OC2")
    assert push_message_id("not-hex", "OC1") == push_message_id("not-hex", "OC1")


def test_only_open_rmas_count() -> None:
    def rma(n: str, status: str) -> Rma:
        return Rma(n, "RA-1", status, None, None, raw={})

    assert [
        r.order_number
        for r in open_rmas([rma("2", "OPEN"), rma("1", "CANCELLED"), rma("0", "created")])
    ] == ["0", "2"]


def test_backoff_doubles_up_to_the_cap_and_polls_start_eager() -> None:
    backoff = exponential_backoff(15, 100)
    assert [backoff(n) for n in (1, 2, 3, 4)] == [15, 30, 60, 100]
    polls = poll_schedule(15)
    assert [polls(n) for n in range(6)] == [0, 0, 0, 15, 30, 60]
