"""Reconciler pieces without network or database: schedules, warehouses, carriers, message ids."""

from __future__ import annotations

from typing import Any

import pytest

from engine.app.reconciler import (
    EAGER_POLLS,
    MAX_CLAIM_BATCH,
    POLL_CAP_S,
    RMA_FIRST_LOOK_S,
    TASK_CONCURRENCY,
    claim_batch,
)
from engine.oc.errors import OCAuthError, OCBusinessError, OCError
from engine.oc.wire import Rma
from engine.reconcile.carriers import CarrierDirectory, UnknownCarrier, region_of
from engine.reconcile.executor import (
    BLOCKED,
    CONFIG_WAIT_S,
    outcome_of_error,
)
from engine.reconcile.oc_rmas import RmaWait, open_rmas, push_message_id
from engine.reconcile.tasks import Done, Park, Retry, Wait
from engine.reconcile.temu_side import TemuReturn, trackings
from engine.reconcile.upload_label import LabelProblem, _schedule, _warehouse, normalize_mode
from engine.retry import exponential_backoff, poll_schedule, rma_wait_schedule
from engine.temu.errors import AppNotOwned, TransportError, error_for

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
    # A numeric id goes back to Temu as the number prepare gave, not as text.
    numeric = {"availableReturnWarehouseList": [{"warehouseId": 7001}, {"warehouseId": 7002}]}
    assert _warehouse(numeric, None) == 7001
    assert _warehouse(numeric, "7002") == 7002


def test_logistic_mode_is_case_insensitive() -> None:
    assert normalize_mode("DROPOFF") == normalize_mode("drop_off") == "dropOff"
    assert normalize_mode("pickup") == "pickUp"
    assert normalize_mode("teleport") is None


async def test_carriers_are_fetched_once_per_region_and_names_mapped() -> None:
    calls: list[int] = []

    async def fetch(region: int) -> list[dict[str, Any]]:
        calls.append(region)
        return CARRIERS

    now = [0.0]
    d = CarrierDirectory(refresh_s=60, clock=lambda: now[0])
    assert (
        await d.resolve(carrier_id=None, carrier_name="Fed Ex", region_id=211, fetch=fetch) == "2"
    )
    assert await d.resolve(carrier_id="1", carrier_name=None, region_id=211, fetch=fetch) == "1"
    assert calls == [211]  # hits come from the cache
    # A miss in a list fetched a minute ago or more looks once more (Temu may have added the
    # carrier since); misses right after that use the fresh list: many lines naming an unknown
    # carrier cost one call, not one each.
    now[0] = 61.0
    with pytest.raises(UnknownCarrier, match="unknown carrier id"):
        await d.resolve(carrier_id="7", carrier_name=None, region_id=211, fetch=fetch)
    for _ in range(5):
        with pytest.raises(UnknownCarrier, match="Pigeon"):
            await d.resolve(carrier_id=None, carrier_name="Pigeon", region_id=211, fetch=fetch)
    assert calls == [211, 211]


async def test_a_carrier_id_goes_back_in_the_json_type_temu_listed_it() -> None:
    async def fetch(region: int | None) -> list[dict[str, Any]]:
        return [{"carrierId": "111", "carrierName": "UPS"}, {"carrierId": 2, "carrierName": "DHL"}]

    d = CarrierDirectory()
    assert await d.resolve(carrier_id=None, carrier_name="UPS", region_id=211, fetch=fetch) == "111"
    assert d.as_listed("111") == "111"  # listed as a string: sent as one
    assert d.as_listed("2") == 2
    assert d.as_listed("699272611") == 699272611  # never listed (taken on trust): a number


async def test_an_empty_carrier_list_is_not_cached_and_a_miss_refetches_once() -> None:
    answers: list[list[dict[str, Any]]] = [[], CARRIERS, [{"carrierId": 1, "carrierName": "UPS"}]]
    calls: list[int] = []

    async def fetch(region: int) -> list[dict[str, Any]]:
        calls.append(region)
        return answers[min(len(calls) - 1, len(answers) - 1)]

    now = [0.0]
    d = CarrierDirectory(refresh_s=60, clock=lambda: now[0])
    with pytest.raises(UnknownCarrier) as empty:
        await d.resolve(carrier_id=None, carrier_name="FedEx", region_id=211, fetch=fetch)
    assert empty.value.listless and "lists no carriers" in empty.value.reason
    # The empty answer was not kept: the next look fetches again.
    assert await d.carriers(211, fetch) == [("1", "UPS"), ("2", "FedEx")]
    assert await d.resolve(carrier_id=None, carrier_name="FedEx", region_id=211, fetch=fetch) == "2"
    assert calls == [211, 211]
    # Cached list (a minute old) without the carrier: one fresh fetch, then a clear refusal.
    now[0] = 61.0
    with pytest.raises(UnknownCarrier, match="Pigeon") as unknown:
        await d.resolve(carrier_id=None, carrier_name="Pigeon", region_id=211, fetch=fetch)
    assert not unknown.value.listless
    assert calls == [211, 211, 211]


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
    assert rma("3", " in_transit ").is_open and not rma("4", " closed ").is_open


def test_backoff_doubles_up_to_the_cap_and_polls_start_eager() -> None:
    backoff = exponential_backoff(15, 100)
    assert [backoff(n) for n in (1, 2, 3, 4)] == [15, 30, 60, 100]
    polls = poll_schedule(15, eager=EAGER_POLLS, cap_s=POLL_CAP_S)
    assert [polls(n) for n in range(6)] == [0, 0, 0, 15, 30, 60]


def temu(code: int) -> Exception:
    return error_for("temu.aftersales.upload.returnlabel", code, "msg", "req-1")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (temu(3000000), Park),  # bad params: our bug or bad data, the same call fails again
        (temu(130010006), Park),  # label refused
        (temu(2000000), Retry),
        (temu(4000000), Retry),
        (temu(4000004), Retry),
        (TransportError("t", 502, "bad gateway"), Retry),
        (OCError("OC query_orders: gave up", retryable=True), Retry),
        (OCError("OC cancel_rma: HTTP 404"), Park),
        (OCBusinessError("OC cancel_rma: business error CANCEL_NOT_ALLOWED"), Park),
        (RuntimeError("database connection lost"), Retry),
    ],
)
def test_a_failure_retries_only_when_retrying_can_help(exc: Exception, kind: type) -> None:
    outcome = outcome_of_error(exc)
    assert type(outcome) is kind
    assert not outcome.reason.startswith(BLOCKED)


@pytest.mark.parametrize(
    "exc",
    [
        temu(3000001),  # bad signature: the app's secret
        temu(3000022),  # unknown app_key
        temu(3000034),  # the shop's token expired
        temu(5000002),  # IP not whitelisted
        temu(3000012),  # clock skew beyond 300 s: the host's clock
        OCAuthError("OC token refresh: rejected (HTTP 400)"),
    ],
)
def test_configuration_problems_wait_long_without_using_attempts(exc: Exception) -> None:
    outcome = outcome_of_error(exc, config_wait_s=CONFIG_WAIT_S)
    assert isinstance(outcome, Wait)
    assert outcome.delay_s == CONFIG_WAIT_S >= 600
    assert outcome.reason.startswith(BLOCKED) and str(exc) in outcome.reason


def test_an_app_leased_elsewhere_hands_the_task_back_at_once() -> None:
    outcome = outcome_of_error(AppNotOwned("(lease)", 0, "app k is not leased to this process"))
    assert isinstance(outcome, Wait) and outcome.delay_s == 0
    assert not outcome.reason.startswith(BLOCKED)


def test_temu_return_reads_numeric_strings_like_the_store() -> None:
    r = TemuReturn({"parentAfterSalesStatus": "8", "availableOperateList": ["1", 10, " 3 ", "x"]})
    assert (r.status, r.operations, r.awaiting_label) == (8, [1, 10, 3], True)
    assert TemuReturn(
        {"parentAfterSalesStatus": 8.0, "availableOperateList": ["10"]}
    ).awaiting_label
    odd = TemuReturn({"parentAfterSalesStatus": True, "availableOperateList": "10"})
    assert (odd.status, odd.operations, odd.awaiting_label) == (None, [], False)
    assert TemuReturn({"parentAfterSalesStatus": "8.5"}).status is None


def test_trackings_are_distinct_in_temu_order_with_the_first_carrier_named() -> None:
    logistics = {
        "logisticsInfoList": [
            {"trackingNumber": "", "carrierName": "UPS"},
            {"trackingNumber": "T1", "carrierName": ""},
            {"trackingNumber": " T2 ", "carrierName": "FedEx"},
            {"trackingNumber": "T1", "carrierName": "UPS"},
            {"trackingNumber": "T2", "carrierName": "USPS"},
            "junk",
        ]
    }
    assert trackings(logistics) == [("T1", "UPS"), ("T2", "FedEx")]
    assert trackings({}) == []


def test_looking_for_a_missing_rma_is_bounded() -> None:
    wait = RmaWait(rma_wait_schedule(RMA_FIRST_LOOK_S, POLL_CAP_S), max_polls=4)
    outcomes = [wait.outcome("RA-1", n) for n in range(5)]
    assert [type(o) for o in outcomes] == [Wait, Wait, Wait, Wait, Done]
    # Never at the next pass: the OC budget belongs to label uploads; minutes, then hours.
    assert [o.delay_s for o in outcomes[:4] if isinstance(o, Wait)] == [300, 600, 1200, 2400]
    assert rma_wait_schedule(RMA_FIRST_LOOK_S, POLL_CAP_S)(29) == 3600
    assert [o.patch for o in outcomes[:2] if isinstance(o, Wait)] == [{"polls": 1}, {"polls": 2}]
    assert outcomes[4] == Done({"outcome": "no_rma", "polls": 4})


def test_a_claim_takes_no_more_tasks_than_its_lease_can_run() -> None:
    assert claim_batch(300, 30) == MAX_CLAIM_BATCH  # ten rounds of 8 fit: capped at 50
    assert claim_batch(60, 30) == 2 * TASK_CONCURRENCY
    assert claim_batch(5, 4) == TASK_CONCURRENCY  # one round
    assert claim_batch(5, 30) == TASK_CONCURRENCY  # never below one round
