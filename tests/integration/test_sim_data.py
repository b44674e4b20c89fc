"""Generated data: deterministic, fast enough for the benchmark, and shaped like Temu's."""

from __future__ import annotations

import time

from engine.sim import SimConfig, SimShop, Simulator
from engine.sim.config import SimApp


def _config(seed: int, orders: int = 500) -> SimConfig:
    return SimConfig.default(orders=orders, returns=80, shops=2, seed=seed, end_ts=1_790_000_000)


def test_same_seed_same_world_and_same_mutations() -> None:
    a, b = Simulator(_config(7)), Simulator(_config(7))
    assert a.truth_orders("shop-1") == b.truth_orders("shop-1")
    assert a.truth_returns("shop-2") == b.truth_returns("shop-2")
    assert a.rmas() == b.rmas()
    ma = a.mutate("shop-1", orders_changed=10, orders_new=5, returns_changed=5, returns_new=3)
    mb = b.mutate("shop-1", orders_changed=10, orders_new=5, returns_changed=5, returns_new=3)
    del ma["now"], mb["now"]
    assert ma == mb
    other = Simulator(_config(8))
    assert other.truth_orders("shop-1") != a.truth_orders("shop-1")


def test_data_stays_inside_the_configured_range() -> None:
    sim = Simulator(
        SimConfig.default(
            orders=2000, returns=300, shops=1, start_ts=1_700_000_000, end_ts=1_710_000_000
        )
    )
    for item in sim.truth_orders("shop-1"):
        parent = item["parentOrderMap"]
        assert 1_700_000_000 <= parent["parentOrderTime"] <= parent["updateTime"] <= 1_710_000_000
        assert 1 <= len(item["orderList"]) <= 3
        assert all(isinstance(line["goodsId"], int) for line in item["orderList"])
    for ret in sim.truth_returns("shop-1"):
        assert 1_700_000_000 <= ret["createAt"] <= ret["updateAt"] <= 1_710_000_000
    lines = sim.truth_return_lines("shop-1")
    per_return: dict[str, int] = {}
    for line in lines:
        per_return[line["parentAfterSalesSn"]] = per_return.get(line["parentAfterSalesSn"], 0) + 1
    assert set(per_return.values()) <= {1, 2, 3}


def test_two_hundred_thousand_orders_generate_in_seconds() -> None:
    config = SimConfig(
        apps=(SimApp("a", "s"),),
        shops=(SimShop("big", "a", "t", orders=200_000, returns=1000),),
    )
    started = time.perf_counter()
    sim = Simulator(config)
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, elapsed
    orders = sim.world.shops["big"].orders
    assert len(orders) == 200_000
    assert orders.seq_of(orders.sn(199_999)) == 199_999
