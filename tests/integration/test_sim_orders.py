"""bg.order.list.v2.get and bg.order.detail.v2.get against the simulator."""

from __future__ import annotations

from typing import Any

import aiohttp

from engine.sim import SimConfig, Simulator
from tests.fixtures_sim import SimFactory, TemuCaller

LIST = "bg.order.list.v2.get"


def _sns(items: list[dict[str, Any]]) -> list[str]:
    return [i["parentOrderMap"]["parentOrderSn"] for i in items]


async def _all_pages(caller: TemuCaller, size: int, **query: Any) -> tuple[int, list[Any]]:
    items: list[Any] = []
    page = 1
    while True:
        answer = await caller.call(LIST, pageNumber=page, pageSize=size, **query)
        assert answer["success"], answer
        result = answer["result"]
        if not result["pageItems"]:
            return result["totalItemNum"], items
        items += result["pageItems"]
        page += 1


async def test_parameter_errors(sim_caller: TemuCaller, sim: Simulator) -> None:
    end = sim.world.end_ts
    window = {"updateAtStart": end - 86400, "updateAtEnd": end}
    for bad in (
        {"pageSize": 0, **window},
        {"pageSize": 101, **window},
        {"pageNumber": 0, **window},
        {"updateAtStart": end - 86400},  # half a pair
        {"createBefore": end},
        {"updateAtStart": end, "updateAtEnd": end - 1},
        {"pageNo": 1, **window},  # the returns API's name for it
        {"sortby": "updateTime desc", **window},
        {"parentOrderSnList": [f"PO-211-{i}" for i in range(21)]},
        {"pageSize": "10", **window},
    ):
        answer = await sim_caller.call(LIST, **bad)
        assert answer["errorCode"] == 3000000, bad
        assert answer["success"] is False and answer["result"] is None


async def test_paging_covers_the_window_exactly_newest_first(
    sim_caller: TemuCaller, sim: Simulator
) -> None:
    truth = sim.truth_orders("shop-1")
    times = sorted(i["parentOrderMap"]["updateTime"] for i in truth)
    start, end = times[len(times) // 4], times[3 * len(times) // 4]
    expected = [
        i for i in truth if start <= i["parentOrderMap"]["updateTime"] <= end
    ]  # closed interval at both ends
    total, items = await _all_pages(
        sim_caller, 7, updateAtStart=start, updateAtEnd=end, sortby="updateTime"
    )
    assert total == len(expected) == len(items)
    assert _sns(items) == _sns(expected)
    assert items == expected  # page items exactly as the ground truth has them
    stamps = [i["parentOrderMap"]["updateTime"] for i in items]
    assert stamps == sorted(stamps, reverse=True)
    assert stamps[0] == end and stamps[-1] == start


async def test_default_sort_is_create_time_descending(
    sim_caller: TemuCaller, sim: Simulator
) -> None:
    end = sim.world.end_ts
    answer = await sim_caller.call(
        LIST, pageNumber=1, pageSize=100, updateAtStart=sim.world.start_ts, updateAtEnd=end
    )
    created = [i["parentOrderMap"]["parentOrderTime"] for i in answer["result"]["pageItems"]]
    assert len(created) == 100
    assert created == sorted(created, reverse=True)
    by_create = await sim_caller.call(
        LIST, pageNumber=1, pageSize=100, createAfter=sim.world.start_ts, createBefore=end
    )
    assert by_create["result"] == answer["result"]


async def test_page_past_the_end_is_empty_with_the_true_total(
    sim_caller: TemuCaller, sim: Simulator
) -> None:
    answer = await sim_caller.call(
        LIST, pageNumber=99, pageSize=100, updateAtStart=0, updateAtEnd=sim.world.end_ts
    )
    assert answer["result"] == {"totalItemNum": 300, "pageItems": []}


async def test_status_and_sn_filters_and_detail(sim_caller: TemuCaller, sim: Simulator) -> None:
    truth = sim.truth_orders("shop-2")
    statuses = {i["parentOrderMap"]["parentOrderStatus"] for i in truth}
    assert statuses == {1, 2, 3, 4, 5, 41, 51}
    names = [line["goodsName"] for i in truth for line in i["orderList"]]
    assert any(not n.isascii() for n in names)
    shipped = [i for i in truth if i["parentOrderMap"]["parentOrderStatus"] == 4]
    total, items = await _all_pages(
        sim_caller,
        50,
        updateAtStart=0,
        updateAtEnd=sim.world.end_ts,
        parentOrderStatus=4,
        sortby="updateTime",
        shop=1,
    )
    assert total == len(shipped) and _sns(items) == _sns(shipped)
    wanted = _sns(truth[5:8])
    answer = await sim_caller.call(
        LIST, shop=1, pageNumber=1, pageSize=10, parentOrderSnList=wanted, sortby="updateTime"
    )
    assert _sns(answer["result"]["pageItems"]) == wanted
    detail = await sim_caller.call("bg.order.detail.v2.get", shop=1, parentOrderSn=wanted[0])
    assert detail["result"]["parentOrderMap"]["parentOrderSn"] == wanted[0]
    assert detail["result"]["orderList"][0]["orderSn"] == truth[5]["orderList"][0]["orderSn"]
    # Another shop's order is not this shop's.
    other = await sim_caller.call("bg.order.detail.v2.get", shop=0, parentOrderSn=wanted[0])
    assert other["errorCode"] == 140020002


async def test_drift_moves_a_record_out_of_a_past_window_and_shifts_later_pages(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(SimConfig.default(orders=400, returns=10, shops=1))
    caller = TemuCaller(sim_http, sim)
    window: dict[str, Any] = {
        "updateAtStart": 0,
        "updateAtEnd": sim.world.end_ts,
        "sortby": "updateTime",
    }
    pages_before = [
        _sns((await caller.call(LIST, pageNumber=n, pageSize=50, **window))["result"]["pageItems"])
        for n in range(1, 9)
    ]
    before = [sn for page in pages_before for sn in page]
    sim.set_drift(1.0)
    first = await caller.call(LIST, pageNumber=1, pageSize=50, **window)
    sim.set_drift(0.0)
    assert sim.stats()["drift_events"] == 1
    # The record that changed is now the newest of all, outside the (past) window.
    moved = sim.truth_orders("shop-1")[0]["parentOrderMap"]
    assert moved["updateTime"] > sim.world.end_ts
    assert moved["parentOrderSn"] in before[50:]  # never from the page being answered
    assert _sns(first["result"]["pageItems"]) == pages_before[0]
    later = [
        _sns((await caller.call(LIST, pageNumber=n, pageSize=50, **window))["result"]["pageItems"])
        for n in range(2, 9)
    ]
    assert [sn for page in later for sn in page] == [
        sn for sn in before[50:] if sn != moved["parentOrderSn"]
    ]
    shifted = [n for n, page in enumerate(later, start=2) if page != pages_before[n - 1]]
    assert shifted and shifted == list(range(shifted[0], 9))  # that page and every later one
    # No drift on a window that reaches the present: records there may legitimately move.
    sim.set_drift(1.0)
    live = {"updateAtStart": 0, "updateAtEnd": sim.world.now() + 10}
    await caller.call(LIST, pageNumber=1, pageSize=10, **live)
    assert sim.stats()["drift_events"] == 1


async def test_mutation_moves_records_to_now_and_keeps_the_index_sorted(
    sim_caller: TemuCaller, sim: Simulator
) -> None:
    changed = sim.mutate("shop-1", orders_changed=5, orders_new=3)
    assert len(changed["orders_changed"]) == 5 and len(changed["orders_new"]) == 3
    now = changed["now"]
    answer = await sim_caller.call(
        LIST,
        pageNumber=1,
        pageSize=100,
        updateAtStart=now,
        updateAtEnd=now + 1,
        sortby="updateTime",
    )
    got = set(_sns(answer["result"]["pageItems"]))
    assert set(changed["orders_changed"]) | set(changed["orders_new"]) <= got
    truth = sim.truth_orders("shop-1")
    assert len(truth) == 303
    stamps = [i["parentOrderMap"]["updateTime"] for i in truth]
    assert stamps == sorted(stamps, reverse=True)
    new = [i for i in truth if i["parentOrderMap"]["parentOrderSn"] in changed["orders_new"]]
    assert all(i["parentOrderMap"]["parentOrderTime"] == now for i in new)
