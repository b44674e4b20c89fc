"""Walks a time range window by window, committing the cursor with each window's last page.

The first page of the next window is requested while the current window is still being paged,
so the limiter never idles between windows (a serial hop per window would cost a few percent of
the app's rate limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.store.store import CursorAdvance
from engine.sync.pager import StreamAdapter, plausible, read_window
from engine.sync.windows import SpanPlanner, Window
from engine.temu.api import Page
from engine.temu.limiter import Lane

log = logging.getLogger(__name__)

ProgressFn = Callable[[Window, int], None]


@dataclass
class WalkResult:
    windows: int = 0
    records: int = 0
    pages: int = 0
    drift_events: int = 0


def to_datetime(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


async def walk_range(
    adapter: StreamAdapter,
    *,
    kind: str,
    start: int,
    end: int,
    lane: Lane,
    planner: SpanPlanner,
    progress: ProgressFn | None = None,
    on_inconsistent: Callable[[Window], Awaitable[None]] | None = None,
) -> WalkResult:
    """Reads every record whose update time lies in ``[start, end]``."""
    result = WalkResult()

    def advance_for(w: Window) -> CursorAdvance:
        return CursorAdvance(stream=adapter.stream, kind=kind, position=to_datetime(w.end))

    pos = start
    prefetched: tuple[Window, asyncio.Task[Page]] | None = None
    try:
        while pos <= end:
            if prefetched is not None and prefetched[0].start == pos:
                window, task = prefetched
                first = await task
            else:
                window = planner.next_window(pos, end)
                first = await adapter.fetch(1, window, lane)
            prefetched = None
            # A bogus total (pager.plausible) sizes nothing: read_window halves down to it.
            while (
                planner.too_full(first.total)
                and window.span > planner.min_span
                and plausible(adapter, first)
            ):
                window = planner.shrink_for(window, first.total)
                first = await adapter.fetch(1, window, lane)
            if plausible(adapter, first):
                planner.observe(window, first.total)
            nxt = window.end + 1
            if nxt <= end:
                next_window = planner.next_window(nxt, end)
                prefetched = (
                    next_window,
                    asyncio.ensure_future(adapter.fetch(1, next_window, lane)),
                )
            read = await read_window(
                adapter,
                window,
                lane,
                advance_for=advance_for,
                first=first,
                on_inconsistent=on_inconsistent,
            )
            result.windows += 1
            result.records += read.total
            result.pages += read.pages
            result.drift_events += read.drift_events
            if progress is not None:
                progress(window, read.total)
            pos = nxt
    finally:
        if prefetched is not None:
            prefetched[1].cancel()
            with contextlib.suppress(BaseException):
                await prefetched[1]
    return result
