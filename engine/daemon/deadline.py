"""A pass that stops making progress is cancelled: the daemon's safety net behind the
deadlines on each wait (a bug or a wait nobody bounded must not wedge a loop for good while
the watchdog keeps pinging)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["PassStalled", "run_with_deadline"]

T = TypeVar("T")


class PassStalled(Exception):
    """The pass made no progress within its deadline and was cancelled."""


async def run_with_deadline(
    work: Awaitable[T],
    *,
    idle_s: Callable[[], float],
    limit_s: float,
    check_every_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Runs ``work`` while ``idle_s()`` (seconds since the loop last made progress) stays
    within ``limit_s``; past it, cancels the work and raises ``PassStalled``. A long pass that
    keeps making progress (a catch-up moving its cursor window by window) is never cut off.
    Idle time counts from this pass's start at the earliest: a retry after a stalled pass
    gets its whole deadline, not what the stalled one left of it."""
    started = clock()
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=check_every_s)
            if done:
                return task.result()
            idle = min(idle_s(), clock() - started)
            if idle > limit_s:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise PassStalled(
                    f"no progress for {idle:.0f} s (deadline {limit_s:.0f} s); pass cancelled"
                )
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
