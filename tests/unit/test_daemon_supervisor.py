"""The supervisor: restarts crashed loops with backoff, stops them all."""

from __future__ import annotations

import asyncio

from engine.daemon.supervisor import Supervisor
from engine.retry import Backoff


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
