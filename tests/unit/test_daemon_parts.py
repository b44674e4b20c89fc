"""The daemon's pure parts: health verdicts, restart backoff, the drift-free tick."""

from __future__ import annotations

import asyncio

from engine.daemon.health import HealthBoard
from engine.daemon.supervisor import Supervisor
from engine.retry import Backoff, sleep_rest_of


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_loop_goes_stale_after_three_intervals_plus_slack() -> None:
    clock = Clock()
    board = HealthBoard(slack_s=10, clock=clock, wall=lambda: 1.7e9)
    board.register("sync:a:orders", 30, kind="sync", shop="a", stream="orders")
    clock.t += 99
    assert board.health()[0] is True
    clock.t += 2
    ok, details = board.health()
    assert ok is False
    assert "sync:a:orders: no progress for 101 s" in details["reason"]
    board.succeeded("sync:a:orders")
    assert board.health()[0] is True


def test_failing_but_fresh_loop_is_reported_without_failing_the_check() -> None:
    clock = Clock()
    board = HealthBoard(slack_s=10, clock=clock, wall=lambda: 1.7e9)
    board.register("sync:b:orders", 30, kind="sync", shop="b", stream="orders")
    board.register("sync:a:orders", 30, kind="sync", shop="a", stream="orders")
    board.failed("sync:b:orders", "ShopAuthError 3000034")
    ok, details = board.health()
    assert ok is True
    assert details["failing"] == ["sync:b:orders"]
    assert details["loops"]["sync:b:orders"]["last_error"] == "ShopAuthError 3000034"
    line = board.status_line(2, {"pending": 3, "dead": 0})
    assert line == "2 shops, 1/2 streams ok (failing: b/orders), outbox 3 pending, 0 dead"
    clock.t += 101
    board.succeeded("sync:a:orders")
    ok, details = board.health()
    assert ok is False and "last error: ShopAuthError 3000034" in details["reason"]


def test_database_down_fails_the_check_with_the_reason() -> None:
    board = HealthBoard(clock=Clock(), wall=lambda: 1.7e9)
    board.database_down("ConnectionRefusedError: [Errno 111]")
    ok, details = board.health()
    assert ok is False
    assert details["reason"].startswith("database unavailable since 2023-11-14T22:13:20Z")
    board.database_ok()
    assert board.health()[0] is True


def test_backoff_grows_to_the_cap() -> None:
    b = Backoff(base=30, cap=600, jitter=0)
    assert [b.delay(n) for n in (1, 2, 3, 5, 6, 1000)] == [30, 60, 120, 480, 600, 600]


async def test_sleep_rest_of_subtracts_the_time_spent() -> None:
    clock = Clock()
    stop = asyncio.Event()
    started = clock.t
    clock.t += 10  # the pass took 10 s of a 10.05 s interval: 50 ms left
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await sleep_rest_of(stop, 10.05, started, clock) is False
    assert loop.time() - t0 < 1.0
    stop.set()
    assert await sleep_rest_of(stop, 60, clock.t, clock) is True


async def test_supervisor_restarts_a_crashed_task_and_stops_all() -> None:
    stop = asyncio.Event()
    crashes: list[str] = []
    runs = 0

    async def flaky(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("boom")
        await stop.wait()

    async def stubborn(stop: asyncio.Event) -> None:
        await asyncio.sleep(3600)  # ignores stop: must be cancelled

    sup = Supervisor(
        stop, restart=Backoff(base=0.01, cap=0.01), on_crash=lambda n, e: crashes.append(n)
    )
    sup.start("flaky", flaky)
    sup.start("stubborn", stubborn)
    for _ in range(100):
        if runs >= 3:
            break
        await asyncio.sleep(0.01)
    assert runs == 3 and crashes == ["flaky", "flaky"] and sup.alive("flaky")
    cancelled = await sup.shutdown(grace_s=0.1, cancel_timeout_s=1)
    assert cancelled == ["stubborn"]
    assert not sup.alive("flaky") and not sup.alive("stubborn")
