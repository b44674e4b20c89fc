"""The simulator's per-app limit: strict sliding second, counted at arrival."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp

from engine.sim import SimConfig, Simulator
from tests.fixtures_sim import SimFactory, TemuCaller

API = "bg.logistics.companies.get"


async def _burst(caller: TemuCaller, n: int, shop: int = 0) -> list[int]:
    answers = await asyncio.gather(*(caller.post(caller.params(API, shop)) for _ in range(n)))
    return [a["errorCode"] for a in answers]


async def test_sixty_at_once_accepts_exactly_qps(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(SimConfig.default(orders=10, returns=2, shops=2))
    caller = TemuCaller(sim_http, sim)
    codes = await _burst(caller, 30, 0) + await _burst(caller, 30, 1)  # two shops, one app
    assert codes.count(1000000) == 20
    assert codes.count(4000004) == 40
    stats = sim.stats()["apps"]["sim-app-1"]
    assert stats["accepted"] == 20 and stats["rejected_rate_limit"] == 40
    assert stats["max_accepted_in_1s"] == 20
    assert len(stats["accepted_at"]) == 20 and len(stats["rejected_at"]) == 40


class SteppedClock:
    """The simulator's arrival clock, moved by the test (no sleeping through a second)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def _stepped(config: SimConfig) -> AsyncIterator[tuple[Simulator, SteppedClock]]:
    clock = SteppedClock()
    async with Simulator(config, arrival_clock=clock) as sim:
        yield sim, clock


async def test_window_slides_rejections_do_not_count(sim_http: aiohttp.ClientSession) -> None:
    config = SimConfig.default(orders=10, returns=2, shops=1, qps=5)
    async with _stepped(config) as (sim, clock):
        caller = TemuCaller(sim_http, sim)
        assert (await _burst(caller, 5)).count(1000000) == 5
        clock.now += 0.5
        # Still inside the same second: everything is refused, and refusals use up nothing.
        assert (await _burst(caller, 10)).count(1000000) == 0
        clock.now += 0.4999
        assert (await _burst(caller, 3)).count(1000000) == 0  # the edge: not yet a second
        clock.now += 0.0002
        assert (await _burst(caller, 8)).count(1000000) == 5
        stats = sim.stats()["apps"]["sim-app-1"]
        assert stats["max_accepted_in_1s"] == 5
        arrivals = stats["accepted_at"]
        assert all(
            sum(1 for t in arrivals if a - 1 < t <= a) <= 5 for a in arrivals
        )  # at most qps in every sliding second


async def test_paced_client_under_jitter_sees_no_rejections(
    sim_factory: SimFactory, sim_http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(
        SimConfig.default(orders=10, returns=2, shops=1, qps=10, latency_ms=40, jitter_ms=20)
    )
    caller = TemuCaller(sim_http, sim)
    # 10 qps with 20 ms of jitter: spacing 1000/10 + 2*20 = 140 ms is always safe.
    tasks = []
    for _ in range(12):
        tasks.append(asyncio.ensure_future(caller.post(caller.params(API))))
        await asyncio.sleep(0.14)
    codes = [a["errorCode"] for a in await asyncio.gather(*tasks)]
    assert codes == [1000000] * 12


async def test_ratelimit_storm_rejects_for_about_a_second(
    sim_http: aiohttp.ClientSession,
) -> None:
    async with _stepped(SimConfig.default(orders=10, returns=2, shops=1)) as (sim, clock):
        caller = TemuCaller(sim_http, sim)
        sim.set_faults(1.0, ["ratelimit_storm"])
        assert (await caller.post(caller.params(API)))["errorCode"] == 4000004
        sim.set_faults(0.0)
        clock.now += 0.99
        assert (await caller.post(caller.params(API)))["errorCode"] == 4000004  # storm goes on
        clock.now += 0.02
        assert (await caller.post(caller.params(API)))["errorCode"] == 1000000
        stats = sim.stats()
        assert stats["faults"] == {"ratelimit_storm": 1}
        assert stats["apps"]["sim-app-1"]["rejected_storm"] == 2


async def test_lenient_calendar_second_window_lets_bursts_through_across_a_boundary(
    sim_http: aiohttp.ClientSession,
) -> None:
    config = SimConfig.default(orders=10, returns=2, shops=1, qps=10, strict_window=False)
    async with _stepped(config) as (sim, clock):
        caller = TemuCaller(sim_http, sim)
        clock.now = 1000.85  # just before a second boundary
        first = await _burst(caller, 10)
        clock.now = 1001.05
        second = await _burst(caller, 10)
        assert first.count(1000000) == second.count(1000000) == 10
        # The stats measure a sliding second regardless, so the burst is visible.
        assert sim.stats()["apps"]["sim-app-1"]["max_accepted_in_1s"] == 20


async def test_counting_refusals_keeps_a_full_window_full(sim_http: aiohttp.ClientSession) -> None:
    config = SimConfig.default(orders=10, returns=2, shops=1, qps=5, count_refused=True)
    async with _stepped(config) as (sim, clock):
        caller = TemuCaller(sim_http, sim)
        assert (await _burst(caller, 5)).count(1000000) == 5
        clock.now += 0.9
        assert (await _burst(caller, 5)).count(1000000) == 0
        # A second after the first burst, the refusals sent 0.9 s in still fill the window.
        clock.now += 0.2
        assert (await _burst(caller, 1)).count(1000000) == 0
        clock.now += 1.0
        assert (await _burst(caller, 5)).count(1000000) == 5
