"""List answers a server should never send, read defensively (temu-api.md: "Parse responses
defensively"): a total that is no count, a return keyed by a number, a lines total that lies."""

from __future__ import annotations

from typing import Any, cast

import pytest

from engine.counters import RunCounters
from engine.store.store import Store
from engine.sync.returns import LINES_MAX_PAGES, ReturnsAdapter
from engine.temu.api import Page, TemuShopApi
from engine.temu.errors import MalformedResponse
from engine.temu.limiter import Lane
from engine.temu.transport import TemuTransport


class Fake:
    """Answers each call with ``answer(api_type, params)``; keeps what was sent."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(
        self, api_type: str, access_token: str, params: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        self.calls.append((api_type, params))
        return cast(dict[str, Any], self.answer(api_type, params))


def api_for(answer: Any) -> tuple[TemuShopApi, Fake]:
    fake = Fake(answer)
    return TemuShopApi(cast(TemuTransport, fake), "shop-1", "tok"), fake


ORDER = {"parentOrderMap": {"parentOrderSn": "PO-1"}, "orderList": []}


async def _orders_page(result: dict[str, Any]) -> Page:
    api, _ = api_for(lambda *_: result)
    return await api.list_orders(
        page_number=1, page_size=10, update_start=1, update_end=2, lane=Lane.INCREMENTAL
    )


async def test_a_whole_float_total_is_a_count() -> None:
    assert await _orders_page({"totalItemNum": 12.0, "pageItems": [ORDER]}) == Page(12, [ORDER])


UNREADABLE = {
    "missing": {"pageItems": [ORDER]},
    "negative": {"totalItemNum": -1, "pageItems": [ORDER]},
    "a fraction": {"totalItemNum": 1.5, "pageItems": [ORDER]},
    "words": {"totalItemNum": "many", "pageItems": [ORDER]},
    "a bool": {"totalItemNum": True, "pageItems": [ORDER]},
}


@pytest.mark.parametrize("result", UNREADABLE.values(), ids=list(UNREADABLE))
async def test_an_unreadable_total_is_a_page_without_a_count(result: dict[str, Any]) -> None:
    """Was MalformedResponse on every pass: the shop failed forever. The pager reads on while
    pages come back full (tests/unit/test_sync_pager.py)."""
    assert await _orders_page(result) == Page(1, [ORDER], total_known=False)


async def test_result_null_on_success_is_asked_again_never_an_empty_page() -> None:
    """The transport hands ``result: null`` over as {}. Read as "nothing listed", two such
    answers in a row would let the pager accept the window and move its cursor past records
    a glitching gateway did not show: it is malformed (asked again, then the pass fails)."""
    with pytest.raises(MalformedResponse, match="neither totalItemNum nor pageItems"):
        await _orders_page({})


def test_a_numeric_return_key_is_its_json_text() -> None:
    adapter = ReturnsAdapter("shop-1", cast(TemuShopApi, None), cast(Store, None), RunCounters())
    assert adapter.key({"parentAfterSalesSn": 70000000001}) == "70000000001"
    assert adapter.key({"parentAfterSalesSn": "RA-\x00"}) == "RA-\x00"  # asked as sent
    assert adapter.key({"parentAfterSalesSn": ""}) is None
    assert adapter.key({}) is None


def _lines_adapter(answer: Any) -> tuple[ReturnsAdapter, Fake]:
    api, fake = api_for(answer)
    return ReturnsAdapter("shop-1", api, cast(Store, None), RunCounters()), fake


async def test_lines_of_a_server_ignoring_page_no_are_read_once() -> None:
    """A total of 10**6 with every page the same: 10,002 calls for one page of returns."""
    line = {"afterSalesSn": "AS-1", "parentAfterSalesSn": "RA-1"}
    adapter, fake = _lines_adapter(lambda *_: {"total": 10**6, "data": [line]})
    got = await adapter._fetch_lines(["RA-1"], Lane.INCREMENTAL)
    assert got[0] == line and len(fake.calls) == 2  # the second page brought nothing new


async def test_lines_reading_is_capped_per_batch() -> None:
    def fresh(_: str, p: dict[str, Any]) -> dict[str, Any]:
        n = p["pageNo"]
        return {"total": 10**6, "data": [{"afterSalesSn": f"AS-{n}", "parentAfterSalesSn": "R"}]}

    adapter, fake = _lines_adapter(fresh)
    got = await adapter._fetch_lines(["R"], Lane.INCREMENTAL)
    assert len(fake.calls) == LINES_MAX_PAGES == len(got)
