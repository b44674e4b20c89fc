"""Walks a time range window by window, committing the cursor with each window's last page.

The first page of the next window is requested while the current window is still being paged,
so the limiter never idles between windows (a serial hop per window would cost a few percent of
the app's rate limit). That alone still left the pacer idle at each hand-off: the next window's
other pages were only requested once the current one was read, written and committed (its
last round trip and write, ~0.1 s, nothing queued). So once the current window has handed its
last page to the pacer, the next window's pages 2..AHEAD_PAGES+1 are requested behind it; its
read then starts with them in flight. Writes and cursor commits stay in window order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.store.store import CursorAdvance
from engine.sync.pager import StreamAdapter, pages_by_total, plausible, read_window
from engine.sync.windows import SpanPlanner, Window
from engine.temu.api import Page
from engine.temu.limiter import Lane

log = logging.getLogger(__name__)

ProgressFn = Callable[[Window, int], None]

# Pages of the next window requested before the current one is done: enough to cover a
# hand-off of ~0.4 s at 20 requests/s (the last answer, the last write, the commit), few
# enough not to crowd other shops of the app out of the pacer's queue.
AHEAD_PAGES = 8


@dataclass
class WalkResult:
    windows: int = 0
    records: int = 0
    pages: int = 0
    drift_events: int = 0


def to_datetime(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class _Head:
    """A window not read yet. Its first page is requested at once; ``prepare`` (called when
    the window before it has requested its last page) sizes it from that page, requests the
    first page of the window after it, then its own pages 2..AHEAD_PAGES+1."""

    def __init__(
        self,
        adapter: StreamAdapter,
        pos: int,
        end: int,
        lane: Lane,
        planner: SpanPlanner,
    ) -> None:
        self._adapter, self._end, self._lane, self._planner = adapter, end, lane, planner
        self.window = planner.next_window(pos, end)
        self._first = asyncio.ensure_future(adapter.fetch(1, self.window, lane))
        self._prepared: asyncio.Task[Page] | None = None
        self.pages: dict[int, asyncio.Future[Page]] = {}  # pages requested ahead
        self.next: _Head | None = None

    def prepare(self) -> None:
        if self._prepared is None:
            self._prepared = asyncio.ensure_future(self._prepare())

    async def take(self) -> tuple[Page, dict[int, asyncio.Future[Page]]]:
        """The (final) window's first page and the pages requested ahead, now the caller's."""
        self.prepare()
        assert self._prepared is not None
        first = await self._prepared
        pages, self.pages = self.pages, {}
        return first, pages

    async def cancel(self) -> None:
        """Cancels what this head and the ones after it requested."""
        head: _Head | None = self
        while head is not None:
            futures: list[asyncio.Future[Any]] = [head._first, *head.pages.values()]
            if head._prepared is not None:
                futures.append(head._prepared)
            for f in futures:
                f.cancel()
            await asyncio.gather(*futures, return_exceptions=True)
            head = head.next

    async def _prepare(self) -> Page:
        adapter, planner, lane = self._adapter, self._planner, self._lane
        first = await self._first
        # A bogus total (pager.plausible) sizes nothing: read_window halves down to it.
        while (
            planner.too_full(first.total)
            and self.window.span > planner.min_span
            and plausible(adapter, first)
        ):
            self.window = planner.shrink_for(self.window, first.total)
            first = await adapter.fetch(1, self.window, lane)
        if plausible(adapter, first) and first.total_known:  # a count to size windows by
            planner.observe(self.window, first.total)
        nxt = self.window.end + 1
        if nxt <= self._end:
            # Before this window's pages: its answer (the next window's size) must be back
            # before they have all been sent, or the pacer idles at the next hand-off.
            self.next = _Head(adapter, nxt, self._end, lane, planner)
        last = min(pages_by_total(adapter, first), 1 + AHEAD_PAGES)
        for page in range(2, last + 1):
            self.pages[page] = asyncio.ensure_future(adapter.fetch(page, self.window, lane))
        return first


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

    head = _Head(adapter, start, end, lane, planner) if start <= end else None
    try:
        while head is not None:
            first, ahead = await head.take()
            window, after = head.window, head.next
            read = await read_window(
                adapter,
                window,
                lane,
                advance_for=advance_for,
                first=first,
                on_inconsistent=on_inconsistent,
                ahead=ahead,
                on_all_requested=None if after is None else after.prepare,
            )
            result.windows += 1
            result.records += read.total
            result.pages += read.pages
            result.drift_events += read.drift_events
            if progress is not None:
                progress(window, read.total)
            head = after
    finally:
        if head is not None:
            with contextlib.suppress(BaseException):
                await head.cancel()
    return result
