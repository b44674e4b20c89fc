"""AppPacer: no sliding second above the limit, lanes, cancellation, adaptive pace."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random

import pytest
from aiolimiter import AsyncLimiter

from engine.temu.limiter import AppPacer, Lane, Send
from tests.virtual_time import run_virtual


def busiest_second(times: list[float]) -> int:
    """Most events in any closed 1-second window (the strictest server reading)."""
    times = sorted(times)
    return max(bisect.bisect_right(times, t + 1.0) - i for i, t in enumerate(times))


async def hammer(acquire: object, tasks: int, per_task: int) -> list[float]:
    loop = asyncio.get_running_loop()
    stamps: list[float] = []

    async def worker() -> None:
        for _ in range(per_task):
            await acquire()  # type: ignore[operator]
            stamps.append(loop.time())

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return stamps


async def _hundred_callers() -> tuple[list[float], float, AppPacer]:
    pacer = AppPacer(100)
    loop = asyncio.get_running_loop()

    async def call() -> None:
        send = await pacer.acquire(Lane.BACKFILL)
        pacer.on_answer(send)  # an instant answer: only the limit itself holds sends back

    start = loop.time()
    stamps = await hammer(call, tasks=100, per_task=4)
    return stamps, loop.time() - start, pacer


async def test_no_sliding_second_exceeds_qps_under_100_concurrent_callers() -> None:
    # Real time, late timers and all: a busy machine can only make it slower, never faster.
    stamps, _, pacer = await _hundred_callers()
    assert len(stamps) == 400 == pacer.sent
    assert busiest_second(stamps) <= 100


def test_100_concurrent_callers_are_paced_at_the_limit_not_below() -> None:
    # Virtual time (tests/virtual_time.py): the schedule exactly as the pacer writes it.
    stamps, elapsed, pacer = run_virtual(_hundred_callers)
    assert len(stamps) == 400 == pacer.sent
    assert busiest_second(stamps) <= 100
    # Strict, but not timid: 400 sends at the 99.5/s ceiling need ~4.0 s.
    assert 3.9 <= elapsed < 4.1
    assert busiest_second(stamps) >= 95


def test_window_waits_for_the_measured_arrival_of_the_send_n_back() -> None:
    run_virtual(_window_waits_for_the_measured_arrival_of_the_send_n_back)


async def _window_waits_for_the_measured_arrival_of_the_send_n_back() -> None:
    pacer = AppPacer(10, margin_s=0.0)
    loop = asyncio.get_running_loop()
    first = await pacer.acquire()
    await asyncio.sleep(0.08)
    pacer.on_answer(first)  # a slow round trip: it may have reached the server 80 ms late
    for _ in range(9):
        pacer.on_answer(await pacer.acquire())  # fast round trips set the minimum near 0
    await pacer.acquire()
    # Spacing alone would allow the 11th send ~1.005 s after the first; the first's arrival
    # may have been 80 ms late, so the 11th waits for that too.
    assert 1.075 <= loop.time() - first.granted_at < 1.15


def test_unanswered_sends_count_as_late_as_the_cap() -> None:
    run_virtual(_unanswered_sends_count_as_late_as_the_cap)


async def _unanswered_sends_count_as_late_as_the_cap() -> None:
    pacer = AppPacer(10, margin_s=0.0, excess_cap_s=0.15)
    loop = asyncio.get_running_loop()
    first = await pacer.acquire()  # never answered: lost, or still in flight
    # The others go after the first's latest arrival, so it stays the N-th latest.
    await asyncio.sleep(0.2)
    for _ in range(9):
        pacer.on_answer(await pacer.acquire())
    await pacer.acquire()
    assert 1.145 <= loop.time() - first.granted_at < 1.22


async def test_the_window_check_catches_a_bursting_limiter() -> None:
    # The spec's counter-example; proves busiest_second can fail.
    limiter = AsyncLimiter(100, 1)
    stamps = await hammer(limiter.acquire, tasks=100, per_task=2)
    assert busiest_second(stamps) > 150


async def test_waiting_higher_lane_goes_before_queued_backfill() -> None:
    pacer = AppPacer(50, slack=0)  # a bucket of one
    await pacer.acquire(Lane.BACKFILL)  # the bucket is now full: everyone below queues
    order: list[str] = []

    async def call(name: str, lane: Lane) -> None:
        await pacer.acquire(lane)
        order.append(name)

    backfill = [asyncio.create_task(call(f"b{i}", Lane.BACKFILL)) for i in range(4)]
    await asyncio.sleep(0)  # the backfill calls are queued first
    later = [
        asyncio.create_task(call("inc", Lane.INCREMENTAL)),
        asyncio.create_task(call("evt", Lane.EVENTS)),
        asyncio.create_task(call("rec", Lane.RECONCILER)),
    ]
    await asyncio.wait_for(asyncio.gather(*backfill, *later), 2)
    # A webhook's re-read goes ahead of polling and backfill.
    assert order == ["rec", "evt", "inc", "b0", "b1", "b2", "b3"]


def test_a_call_arriving_mid_wait_overtakes_queued_backfill() -> None:
    run_virtual(_a_call_arriving_mid_wait_overtakes_queued_backfill)


async def _a_call_arriving_mid_wait_overtakes_queued_backfill() -> None:
    pacer = AppPacer(20, slack=0)  # 50 ms apart: time to arrive while the next slot is pending
    await pacer.acquire(Lane.BACKFILL)
    order: list[str] = []

    async def call(name: str, lane: Lane) -> None:
        await pacer.acquire(lane)
        order.append(name)

    backfill = [asyncio.create_task(call(f"b{i}", Lane.BACKFILL)) for i in range(3)]
    await asyncio.sleep(0.02)
    inc = asyncio.create_task(call("inc", Lane.INCREMENTAL))
    await asyncio.wait_for(asyncio.gather(*backfill, inc), 2)
    assert order[0] == "inc"


def test_cancelled_waiters_neither_leak_slots_nor_block_others() -> None:
    run_virtual(_cancelled_waiters_neither_leak_slots_nor_block_others)


async def _cancelled_waiters_neither_leak_slots_nor_block_others() -> None:
    pacer = AppPacer(50, slack=0)
    await pacer.acquire()
    loop = asyncio.get_running_loop()
    done: list[int] = []

    async def call(i: int) -> None:
        await pacer.acquire(Lane.BACKFILL)
        done.append(i)

    tasks = [asyncio.create_task(call(i)) for i in range(8)]
    await asyncio.sleep(0)
    for i in (0, 3, 4, 7):  # the head, the middle and the tail
        tasks[i].cancel()
    start = loop.time()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)
    assert done == [1, 2, 5, 6]
    # Four live calls after one send: about 4 gaps of 20.4 ms, not 8.
    assert loop.time() - start < 0.14
    assert pacer.waiting == 0
    # All waiters cancelled: the pacer still serves the next caller.
    stuck = [asyncio.create_task(pacer.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    for t in stuck:
        t.cancel()
    await asyncio.gather(*stuck, return_exceptions=True)
    await asyncio.wait_for(pacer.acquire(), 1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_pace_starts_under_the_limit() -> None:
    pacer = AppPacer(20)
    assert 19.0 < pacer.pace < 20
    assert AppPacer(20, headroom=0.05).pace == pytest.approx(19.0)
    with pytest.raises(ValueError):
        AppPacer(20, headroom=0)


def test_rate_limits_slow_the_pace_once_per_overshoot_down_to_the_floor() -> None:
    clock = FakeClock()
    pacer = AppPacer(20, decrease=0.05, coalesce_s=1.0, clock=clock)
    start = pacer.pace
    pacer.on_rate_limited()
    slowed = pacer.pace
    assert slowed == pytest.approx(start * 0.95)
    # The rest of the same overshoot's rejections arrive together: one step, not five.
    for _ in range(4):
        clock.now += 0.1
        pacer.on_rate_limited()
    assert pacer.pace == slowed
    # An isolated overshoot later (a jitter edge): the same small step.
    clock.now += 5.0
    pacer.on_rate_limited()
    assert pacer.pace == pytest.approx(start * 0.95**2)
    for _ in range(100):
        clock.now += 1.1
        pacer.on_rate_limited()
    assert pacer.pace == pytest.approx(2.0)  # floor: a tenth of the limit


def test_overshoots_in_consecutive_seconds_double_the_step() -> None:
    """Temu holds the app at 5/s while the config says 20 (another integration spends the
    same budget, say): the pace must get under 5 within seconds, not minutes."""
    clock = FakeClock()
    pacer = AppPacer(20, clock=clock)
    start = pacer.pace
    steps = []
    while pacer.pace > 5:
        before = pacer.pace
        pacer.on_rate_limited()
        steps.append(round(1 - pacer.pace / before, 4))
        clock.now += 1.05  # refused again in the next second
    assert steps[:6] == [0.01, 0.02, 0.04, 0.08, 0.16, 0.25]
    assert len(steps) <= 10 and clock.now < 11
    # A quiet spell resets the step: the next isolated refusal costs 1 % again.
    clock.now += 10
    before = pacer.pace
    pacer.on_rate_limited()
    assert pacer.pace == pytest.approx(before * 0.99)
    assert start == pytest.approx(19.9)


def test_successes_recover_gradually_to_the_ceiling() -> None:
    clock = FakeClock()
    pacer = AppPacer(20, decrease=0.05, recover_step=0.001, clock=clock)
    ceiling = pacer.pace
    pacer.on_rate_limited()
    low = pacer.pace
    pacer.on_success()
    assert low < pacer.pace < ceiling  # one success does not undo a slowdown
    for _ in range(1000):
        pacer.on_success()
    assert pacer.pace == ceiling


def test_slower_pace_really_spaces_sends_further() -> None:
    run_virtual(_slower_pace_really_spaces_sends_further)


async def _slower_pace_really_spaces_sends_further() -> None:
    clock = FakeClock()
    pacer = AppPacer(100, decrease=0.5, floor_ratio=0.5, clock=clock)
    loop = asyncio.get_running_loop()
    await pacer.acquire()
    pacer.on_rate_limited()  # 98/s -> 50/s (floor): 20 ms apart instead of 10.2
    assert pacer.pace == pytest.approx(50)
    stamps = await hammer(pacer.acquire, tasks=5, per_task=4)
    stamps.sort()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # 20 sends at 50/s span at least 17 x 20 ms (a bucket of three lets three go at once);
    # at the old 98/s they would span ~173 ms.
    assert stamps[-1] - stamps[0] >= 0.34
    # The bucket of three may send a late send with the next two, but never four in a row.
    assert all(sum(gaps[i : i + 3]) >= 0.019 for i in range(len(gaps) - 2))
    assert loop.time() > 0


def test_window_counts_arrivals_out_of_send_order() -> None:
    run_virtual(_window_counts_arrivals_out_of_send_order)


async def _window_counts_arrivals_out_of_send_order() -> None:
    # Jitter beyond the spacing reorders arrivals. The second send may have arrived 150 ms
    # late, after the third (100 ms later, fast): it is then among the N-1 latest arrivals
    # when the (N+2)-th send goes, and only the third's arrival has to be a second old.
    pacer = AppPacer(10, margin_s=0.0)  # N = 10, spaced ~100.5 ms
    loop = asyncio.get_running_loop()

    async def answer_late(send: Send) -> None:
        await asyncio.sleep(0.15)
        pacer.on_answer(send)

    sends = []
    late: asyncio.Task[None] | None = None
    for i in range(11):
        send = await pacer.acquire()
        sends.append(send)
        if i == 1:
            late = asyncio.create_task(answer_late(send))
        else:
            pacer.on_answer(send)  # instant: the fastest round trip, excess 0
    assert late is not None
    await late
    last = await pacer.acquire()
    assert last.granted_at - loop.time() == 0.0
    # Waiting for the late send's arrival would hold it to 1.15 s after that send.
    assert last.granted_at < sends[1].granted_at + 1.15 - 0.03
    assert last.granted_at >= sends[2].granted_at + 1.0
    # And it is safe: at most N-1 earlier sends may arrive in the second before it.
    bounds = [s.granted_at + (0.15 if s is sends[1] else 0.0) for s in sends]
    assert sum(b > last.granted_at - 1.0 + 1e-9 for b in bounds) <= 9


def window_max(arrivals: list[float]) -> int:
    """Most arrivals in any window (t - 1 s, t], as the simulator counts them."""
    times = sorted(arrivals)
    return max(i - bisect.bisect_right(times, t - 1.0) + 1 for i, t in enumerate(times))


def jittered_run(jitter_s: float, seed: int, *, fastest_first: bool) -> tuple[float, int]:
    """300 sends by 32 callers at 20/s, each reaching the server 0..2*jitter after its grant
    and answered a fixed 30 ms later, as the simulator's network does. ``fastest_first``: the
    first send takes the fastest forward delay (the pacer has seen the true fastest round
    trip). Returns the arrival rate over the run and the busiest second."""

    async def main() -> tuple[float, int]:
        rng = random.Random(seed)
        pacer = AppPacer(20)
        arrivals: list[float] = []
        left = iter(range(300))

        async def caller() -> None:
            for i in left:
                send = await pacer.acquire(Lane.BACKFILL)
                forward = 0.0 if fastest_first and i == 0 else rng.uniform(0.0, 2 * jitter_s)
                arrivals.append(send.granted_at + forward)
                await asyncio.sleep(forward + 0.03)
                pacer.on_answer(send)

        await asyncio.gather(*(caller() for _ in range(32)))
        rate = (len(arrivals) - 1) / (max(arrivals) - min(arrivals))
        return rate, window_max(arrivals)

    return run_virtual(main)


@pytest.mark.parametrize(("jitter_ms", "at_least"), [(10, 19.85), (30, 19.4)])
def test_jittered_arrivals_stay_within_the_limit_and_close_to_it(
    jitter_ms: int, at_least: float
) -> None:
    runs = [jittered_run(jitter_ms / 1000, seed, fastest_first=True) for seed in range(10)]
    assert max(busiest for _, busiest in runs) <= 20
    # The window waits for the N-th latest arrival, not for every send N back: at +-30 ms
    # these runs made 19.308/s when it did (19.799 at +-10), 19.322 (19.796) with a bucket of
    # two, 19.427 (19.864) with a bucket of three.
    assert sum(rate for rate, _ in runs) / len(runs) >= at_least


def test_a_cold_start_does_not_take_the_fastest_round_trip_seen_for_the_fastest() -> None:
    # The first dozens of round trips may all be slower than the fastest to come: a send that
    # then takes the fastest path could make a 21st arrival (seed 18 did, at +-10 ms, while
    # the window took the fastest round trip seen for the fastest there is).
    for seed in range(20):
        _, busiest = jittered_run(0.01, seed, fastest_first=False)
        assert busiest <= 20, f"seed {seed}"
