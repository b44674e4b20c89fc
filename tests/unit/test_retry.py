"""The backoff formulas of engine/retry.py and the one way a loop waits unless stopping."""

from __future__ import annotations

import asyncio
import time

from engine.retry import (
    Backoff,
    capped_exponential,
    exponential_backoff,
    failing_stream_delay,
    full_jitter,
    poll_schedule,
    rma_wait_schedule,
    sleep_or_stop,
    sleep_rest_of,
)


def test_backoff_grows_to_the_cap_with_jitter_below_it() -> None:
    b = Backoff(base=30, cap=600, jitter=0)
    assert [b.delay(n) for n in (1, 2, 3, 5, 6, 10_000)] == [30, 60, 120, 480, 600, 600]
    assert Backoff(base=10, cap=100, jitter=0.1).delay(1, rng=lambda: 1.0) == 9.0


def test_full_jitter_draws_below_the_doubled_delay_and_the_cap() -> None:
    draws = [full_jitter(1.0, 5.0, n, lambda: 0.5) for n in (1, 2, 3, 4, 100)]
    assert draws == [0.5, 1.0, 2.0, 2.5, 2.5]
    assert capped_exponential(1.0, 1e9, 10**6) == 1e9  # no overflow after months


def test_the_reconciler_schedules() -> None:
    assert [exponential_backoff(15, 100)(n) for n in (1, 2, 3, 4)] == [15, 30, 60, 100]
    polls = poll_schedule(15, eager=3, cap_s=3600)
    assert [polls(n) for n in range(6)] == [0, 0, 0, 15, 30, 60]
    rma = rma_wait_schedule(300, 3600)
    assert [rma(n) for n in range(6)] == [300, 600, 1200, 2400, 3600, 3600]


async def test_sleep_or_stop_returns_at_once_when_stopped() -> None:
    stop = asyncio.Event()
    began = time.monotonic()
    assert await sleep_or_stop(stop, 0.01) is False
    asyncio.get_running_loop().call_later(0.05, stop.set)
    assert await sleep_or_stop(stop, 30.0) is True
    assert time.monotonic() - began < 5.0
    # A tick that already took longer than its interval goes on at once.
    assert await sleep_rest_of(asyncio.Event(), 1.0, started=0.0, clock=lambda: 5.0) is False


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_backoff_grows_to_the_cap() -> None:
    b = Backoff(base=30, cap=600, jitter=0)
    assert [b.delay(n) for n in (1, 2, 3, 5, 6, 1000)] == [30, 60, 120, 480, 600, 600]


async def test_sleep_rest_of_subtracts_the_time_spent() -> None:
    clock = _Clock()
    stop = asyncio.Event()
    started = clock.t
    clock.t += 10  # the pass took 10 s of a 10.05 s interval: 50 ms left
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await sleep_rest_of(stop, 10.05, started, clock) is False
    assert loop.time() - t0 < 1.0
    stop.set()
    assert await sleep_rest_of(stop, 60, clock.t, clock) is True


def test_failing_stream_delay() -> None:
    delay = failing_stream_delay(30.0, cap_s=3600.0)
    # Two failed passes are retried at the next polls; then 60 s (at least a minute), doubling.
    assert [delay(n) for n in range(1, 10)] == [0, 0, 60, 120, 240, 480, 960, 1920, 3600]
    assert delay(10_000) == 3600
    assert failing_stream_delay(300.0)(3) == 300
