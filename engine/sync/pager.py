"""Reads one time window completely, even when records move while it is paged.

Temu sorts newest first. A record updated while a past window is being paged leaves the window
(its update time becomes "now"), the total drops by one and every later record shifts up one
place, so one record that did NOT change would be skipped. Records only ever leave a past
window, so a read is complete exactly when every page reported the same total and the pages
together held that many distinct records. Otherwise the window is read again (writes are
idempotent, so re-reading costs requests, not correctness); a window that keeps drifting is cut
in halves, which are quicker to page.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.store.store import CursorAdvance
from engine.sync.windows import Window
from engine.temu.api import Page
from engine.temu.limiter import Lane

log = logging.getLogger(__name__)

Item = dict[str, Any]


class StreamAdapter(Protocol):
    """One shop's view of one stream (orders or returns)."""

    stream: str
    page_size: int

    async def fetch(self, page: int, window: Window, lane: Lane) -> Page: ...

    def key(self, item: Item) -> str | None: ...

    async def write(self, items: list[Item], advance: CursorAdvance | None) -> None: ...


@dataclass
class WindowRead:
    total: int
    consistent: bool
    pages: int
    drift_events: int


class _HoldLastWriter:
    """Writes pages as they arrive but keeps the latest one back, so that the cursor advance
    can be committed in the same transaction as the last rows of the window."""

    def __init__(self, adapter: StreamAdapter) -> None:
        self._adapter = adapter
        self._held: list[Item] | None = None

    async def push(self, items: list[Item]) -> None:
        if self._held is not None:
            await self._adapter.write(self._held, None)
        self._held = items

    async def finish(self, advance: CursorAdvance | None) -> None:
        if self._held is not None or advance is not None:
            await self._adapter.write(self._held or [], advance)
        self._held = None


async def _read_once(
    adapter: StreamAdapter,
    window: Window,
    lane: Lane,
    first: Page,
    advance: CursorAdvance | None,
    max_in_flight: int,
) -> WindowRead:
    total = first.total
    n_pages = max(1, math.ceil(total / adapter.page_size))
    totals = {first.total}
    seen: set[str] = set()
    unkeyed = 0

    def account(page: Page) -> None:
        nonlocal unkeyed
        unkeyed += page.skipped  # dropped non-objects still took a place in the listing
        for item in page.items:
            k = adapter.key(item)
            if k is None:
                unkeyed += 1
            else:
                seen.add(k)

    writer = _HoldLastWriter(adapter)
    account(first)
    await writer.push(first.items)

    gate = asyncio.Semaphore(max_in_flight)

    async def fetch(page_no: int) -> Page:
        async with gate:
            return await adapter.fetch(page_no, window, lane)

    tasks = [asyncio.ensure_future(fetch(p)) for p in range(2, n_pages + 1)]
    try:
        for fut in asyncio.as_completed(tasks):
            page = await fut
            totals.add(page.total)
            account(page)
            await writer.push(page.items)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

    consistent = len(totals) == 1 and len(seen) + unkeyed >= total
    await writer.finish(advance if consistent else None)
    return WindowRead(
        total=total, consistent=consistent, pages=n_pages, drift_events=0 if consistent else 1
    )


async def read_window(
    adapter: StreamAdapter,
    window: Window,
    lane: Lane,
    *,
    advance_for: Callable[[Window], CursorAdvance | None],
    first: Page | None = None,
    attempts: int = 3,
    max_in_flight: int = 32,
    on_drift: Callable[[Window], Awaitable[None] | None] | None = None,
) -> WindowRead:
    """Reads ``window`` until one pass is consistent, splitting it if it keeps drifting.

    ``max_in_flight`` bounds the pages one (shop, stream) has queued at the app's pacer: enough
    to keep 20 requests/s going at round trips up to ~1.5 s, few enough that shops of one app
    interleave instead of taking turns a whole window at a time.

    The cursor advance for a (sub)window is committed with that window's last page.
    """
    drift = 0
    for _ in range(attempts):
        if first is None:
            first = await adapter.fetch(1, window, lane)
        result = await _read_once(adapter, window, lane, first, advance_for(window), max_in_flight)
        first = None
        if result.consistent:
            result.drift_events += drift
            return result
        drift += 1
        log.info(
            "records moved while paging; reading the window again",
            extra={"stream": adapter.stream, "window": f"{window.start}-{window.end}"},
        )
        if on_drift is not None:
            maybe = on_drift(window)
            if maybe is not None:
                await maybe
    if window.span > 1:
        total = 0
        pages = 0
        for half in window.halves():
            sub = await read_window(
                adapter,
                half,
                lane,
                advance_for=advance_for,
                attempts=attempts,
                max_in_flight=max_in_flight,
                on_drift=on_drift,
            )
            total += sub.total
            pages += sub.pages
            drift += sub.drift_events
        return WindowRead(total=total, consistent=True, pages=pages, drift_events=drift)
    # A one-second window that never reads consistently is a server-side inconsistency, not
    # drift; accept what was read rather than block the stream forever, and say so loudly.
    log.warning(
        "window never read consistently; accepting what was read",
        extra={"stream": adapter.stream, "window": f"{window.start}-{window.end}"},
    )
    result = await _read_once(
        adapter,
        window,
        lane,
        await adapter.fetch(1, window, lane),
        advance_for(window),
        max_in_flight,
    )
    if not result.consistent:
        await adapter.write([], advance_for(window))
    result.drift_events += drift
    return result
