"""The pass watchdog: a pass without progress is cancelled, a busy one is never cut off."""

from __future__ import annotations

import asyncio

import pytest

from engine.daemon.deadline import PassStalled, run_with_deadline


async def test_a_stalled_pass_is_cancelled_with_a_reason() -> None:
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    idle = iter([1.0, 5.0, 11.0])  # seconds since the loop's last progress, at each check
    now = iter([0.0, 1.0, 5.0, 11.0])  # the clock: at the start, then at each check
    with pytest.raises(PassStalled, match="no progress for 11 s"):
        await run_with_deadline(
            hangs(),
            idle_s=lambda: next(idle),
            limit_s=10.0,
            check_every_s=0.01,
            clock=lambda: next(now),
        )
    assert cancelled.is_set()


async def test_a_pass_that_keeps_making_progress_runs_to_its_end() -> None:
    async def long_but_busy() -> str:
        await asyncio.sleep(0.2)
        return "done"

    result = await run_with_deadline(
        long_but_busy(), idle_s=lambda: 0.0, limit_s=0.05, check_every_s=0.01
    )
    assert result == "done"


async def test_the_pass_error_comes_through() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await run_with_deadline(fails(), idle_s=lambda: 0.0, limit_s=1.0, check_every_s=0.01)


async def test_a_retry_gets_its_whole_deadline_whatever_the_stalled_pass_left() -> None:
    """The loop last made progress long ago (the pass before stalled): the new pass is measured
    from its own start, so it is not cancelled at its first check."""

    async def short_pass() -> str:
        await asyncio.sleep(0.05)
        return "done"

    result = await run_with_deadline(
        short_pass(), idle_s=lambda: 120.0, limit_s=10.0, check_every_s=0.01
    )
    assert result == "done"
