"""TemuShopApi: the parameters each API type is sent with, and defensive result parsing."""

from __future__ import annotations

from typing import Any, cast

import pytest

from engine.config import AppSettings, Secret
from engine.temu.api import MALFORMED_ATTEMPTS, Page, TemuShopApi
from engine.temu.errors import MalformedResponse, ShopAuthError, TransportError
from engine.temu.limiter import Lane
from engine.temu.transport import TemuTransport


class FakeTransport:
    app = AppSettings(app_key="ak", app_secret=Secret("s"))

    def __init__(self, *results: dict[str, Any] | Exception) -> None:
        self.results = list(results)
        self.calls: list[tuple[str, str, dict[str, Any], Lane]] = []
        self.idempotent: list[bool] = []

    async def call(
        self,
        api_type: str,
        access_token: str,
        params: dict[str, Any],
        *,
        lane: Lane,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        self.calls.append((api_type, access_token, params, lane))
        self.idempotent.append(idempotent)
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


def shop(*results: dict[str, Any] | Exception) -> tuple[TemuShopApi, FakeTransport]:
    fake = FakeTransport(*results)
    return TemuShopApi(cast(TemuTransport, fake), "us-main", "tok-1"), fake


ORDER = {
    "parentOrderMap": {"parentOrderSn": "PO-1", "updateTime": 1700000000, "newField": [1]},
    "orderList": [{"orderSn": "O-1", "quantity": 2}],
}


async def test_list_orders_sends_update_window_sorted_by_update_time() -> None:
    api, fake = shop({"totalItemNum": 7, "pageItems": [ORDER], "extra": True})
    page = await api.list_orders(
        page_number=2, page_size=100, update_start=10, update_end=20, lane=Lane.BACKFILL
    )
    assert page == Page(total=7, items=[ORDER])
    assert page.items[0] is ORDER  # exactly as sent, unknown fields kept
    assert fake.calls == [
        (
            "bg.order.list.v2.get",
            "tok-1",
            {
                "pageNumber": 2,
                "pageSize": 100,
                "updateAtStart": 10,
                "updateAtEnd": 20,
                "sortby": "updateTime",
            },
            Lane.BACKFILL,
        )
    ]


async def test_list_parent_returns_uses_page_no_not_page_number() -> None:
    ret = {"parentAfterSalesSn": "PAS-1", "parentAfterSalesStatus": 8}
    api, fake = shop({"total": 1, "pageNumber": 1, "data": [ret]})
    page = await api.list_parent_returns(
        page_no=1, page_size=200, update_start=1, update_end=2, lane=Lane.INCREMENTAL
    )
    assert page == Page(1, [ret])
    api_type, _, params, _ = fake.calls[0]
    assert api_type == "bg.aftersales.parentaftersales.list.get"
    assert params == {"pageNo": 1, "pageSize": 200, "updateAtStart": 1, "updateAtEnd": 2}


async def test_list_return_lines_sends_the_sn_list() -> None:
    line = {"afterSalesSn": "AS-1", "parentAfterSalesSn": "PAS-1"}
    api, fake = shop({"data": [line]})
    page = await api.list_return_lines(
        ["PAS-1", "PAS-2"], page_no=1, page_size=50, lane=Lane.INCREMENTAL
    )
    assert page == Page(1, [line], total_known=False)
    api_type, _, params, _ = fake.calls[0]
    assert api_type == "bg.aftersales.aftersales.list.get"
    assert params == {"parentAfterSalesSnList": ["PAS-1", "PAS-2"], "pageNo": 1, "pageSize": 50}


async def test_single_record_calls() -> None:
    api, fake = shop(
        {"logisticsInfoList": []},
        {"availableReturnWarehouseList": [{"warehouseId": "W1"}]},
        {},
        {"carrierDTOList": [{"carrierId": 1, "carrierName": "UPS"}]},
        {"parentOrderMap": {}},
    )
    assert await api.parent_return_order("PAS-1", lane=Lane.RECONCILER) == {"logisticsInfoList": []}
    prep = await api.returnlabel_prepare("PAS-1", "PO-1", lane=Lane.RECONCILER)
    assert prep["availableReturnWarehouseList"][0]["warehouseId"] == "W1"
    label = {"parentAfterSalesSn": "PAS-1", "returnLabelDTOList": [{"carrierId": 1}]}
    assert await api.upload_returnlabel(label, lane=Lane.RECONCILER) == {}
    assert fake.idempotent[-1] is False, "an upload is never resent blindly"
    assert await api.carriers(211, lane=Lane.RECONCILER) == [{"carrierId": 1, "carrierName": "UPS"}]
    await api.order_detail("PO-1", lane=Lane.INCREMENTAL)
    assert [(c[0], c[2]) for c in fake.calls] == [
        ("bg.aftersales.parentreturnorder.get", {"parentAfterSalesSn": "PAS-1"}),
        (
            "temu.aftersales.returnlabel.prepare.get",
            {"parentAfterSalesSn": "PAS-1", "parentOrderSn": "PO-1"},
        ),
        ("temu.aftersales.upload.returnlabel", label),
        ("temu.aftersales.carrier.get", {"returnWarehouseRegionId1": 211}),
        ("bg.order.detail.v2.get", {"parentOrderSn": "PO-1"}),
    ]


async def test_empty_page_may_omit_the_list() -> None:
    api, _ = shop({"totalItemNum": 0})
    page = await api.list_orders(
        page_number=1, page_size=10, update_start=1, update_end=2, lane=Lane.INCREMENTAL
    )
    assert page == Page(0, [])


MALFORMED = {
    "missing list": {"totalItemNum": 3},
    "list is a dict": {"totalItemNum": 3, "pageItems": {"a": 1}},
    # A total that is no count is a page without one (tests/unit/test_hostile_answers.py).
    "total no count, list not a list": {"totalItemNum": "many", "pageItems": "x"},
}


@pytest.mark.parametrize("result", MALFORMED.values(), ids=list(MALFORMED))
async def test_malformed_page_raises_a_typed_error(result: dict[str, Any]) -> None:
    # Asked for again (a gateway may mangle one answer); surfaces when it stays malformed.
    api, fake = shop(*[result] * MALFORMED_ATTEMPTS)
    with pytest.raises(MalformedResponse) as info:
        await api.list_orders(
            page_number=1, page_size=10, update_start=1, update_end=2, lane=Lane.INCREMENTAL
        )
    err = info.value
    assert isinstance(err, TransportError) and err.retryable
    assert err.shop_id == "us-main"
    assert "bg.order.list.v2.get" in str(err)
    assert len(fake.calls) == MALFORMED_ATTEMPTS


async def test_a_malformed_answer_once_is_asked_again() -> None:
    api, fake = shop(
        {"totalItemNum": 1, "pageItems": {"a": 1}}, {"totalItemNum": 1, "pageItems": [ORDER]}
    )
    page = await api.list_orders(
        page_number=1, page_size=10, update_start=1, update_end=2, lane=Lane.INCREMENTAL
    )
    assert page == Page(1, [ORDER]) and len(fake.calls) == 2


async def test_lenient_where_nothing_is_lost() -> None:
    # A count sent as a string is a count; elements that are not objects are dropped (and
    # counted, so the pager still sees the listing's full length) without losing the others.
    api, _ = shop({"totalItemNum": "3", "pageItems": ["PO-1", ORDER, None]})
    page = await api.list_orders(
        page_number=1, page_size=10, update_start=1, update_end=2, lane=Lane.INCREMENTAL
    )
    assert page == Page(3, [ORDER], odd=("PO-1", None)) and page.skipped == 2


async def test_malformed_carriers_raise() -> None:
    api, _ = shop({"carriers": []})
    with pytest.raises(MalformedResponse):
        await api.carriers(1, lane=Lane.RECONCILER)


async def test_errors_name_the_shop() -> None:
    api, _ = shop(ShopAuthError("bg.order.list.v2.get", 3000034, "expired", "r"))
    with pytest.raises(ShopAuthError) as info:
        await api.order_detail("PO-1", lane=Lane.INCREMENTAL)
    assert info.value.scope == "shop"
    assert "us-main" in str(info.value)


async def test_out_of_range_paging_is_refused_before_sending() -> None:
    api, fake = shop()
    with pytest.raises(ValueError):
        await api.list_orders(
            page_number=1, page_size=101, update_start=1, update_end=2, lane=Lane.INCREMENTAL
        )
    with pytest.raises(ValueError):
        await api.list_parent_returns(
            page_no=0, page_size=10, update_start=1, update_end=2, lane=Lane.INCREMENTAL
        )
    with pytest.raises(ValueError):
        await api.list_return_lines("PAS-1", page_no=1, page_size=10, lane=Lane.INCREMENTAL)
    assert fake.calls == []


def test_repr_has_no_token() -> None:
    api, _ = shop()
    assert "tok-1" not in repr(api)


async def test_child_lines_without_a_total_are_paged_until_a_short_page() -> None:
    """The docs show no total for child lines: a full page must not be taken for the last."""
    from engine.counters import RunCounters
    from engine.store.store import Store
    from engine.sync.returns import LINES_PAGE_SIZE, ReturnsAdapter

    def lines(start: int, n: int) -> list[dict[str, Any]]:
        return [
            {"afterSalesSn": f"AS-{i}", "parentAfterSalesSn": "PAS-1"}
            for i in range(start, start + n)
        ]

    api, fake = shop({"data": lines(0, LINES_PAGE_SIZE)}, {"data": lines(LINES_PAGE_SIZE, 50)})
    adapter = ReturnsAdapter("shop-1", api, cast(Store, None), RunCounters())
    got = await adapter._fetch_lines(["PAS-1"], Lane.INCREMENTAL)
    assert len(got) == LINES_PAGE_SIZE + 50
    assert [c[2]["pageNo"] for c in fake.calls] == [1, 2]
