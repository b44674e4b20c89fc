"""A deadline that is kept even when the awaited work cannot be cancelled promptly.

``asyncio.timeout`` ends only once the cancelled code returns. asyncpg answers a cancellation
by asking the server to cancel the statement and waiting for it: against a Postgres that is
silent (a frozen host, a black-holed network) that wait lasts until the connection's own
command timeout, a minute later. A webhook answer due within 500 ms, or a health probe due in
3 s, cannot wait for that: ``within`` gives up on time and lets the cancellation finish in
the background.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

# Abandoned tasks, kept referenced until they end (the loop holds only weak references).
_abandoned: set[asyncio.Task[Any]] = set()


async def within(aw: Awaitable[T], timeout_s: float) -> T:
    """``await aw``, raising TimeoutError after ``timeout_s`` whatever the work is doing.

    On timeout the work is cancelled and left to finish its cancellation on its own; its
    outcome is collected so nothing is reported as never retrieved.
    """
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        _abandon(task)
        raise
    if done:
        return task.result()
    task.cancel()
    _abandon(task)
    raise TimeoutError(f"gave up after {timeout_s:g} s")


def _abandon(task: asyncio.Task[Any]) -> None:
    _abandoned.add(task)
    task.add_done_callback(_collect)


def _collect(task: asyncio.Task[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: the caller already answered for it
