"""Reads one time window completely, even when records move while it is paged.

Temu sorts newest first. A record updated while a past window is being paged leaves the window
(its update time becomes "now"), the total drops by one and every later record shifts up one
place, so one record that did NOT change would be skipped. Records only ever leave a past
window, so a read is complete exactly when every page reported the same total and the pages
together held that many distinct records. Otherwise the window is read again (writes are
idempotent, so re-reading costs requests, not correctness); a window that keeps drifting is cut
in halves, which are quicker to page.

Two answers are not trusted as they come (issue 12). A ``total`` that would need more than
MAX_WINDOW_PAGES pages is not paged (a bogus 10**12 must not queue millions of page reads): the
window is halved without reading it, down to one second. A one-second window that still reads
inconsistently is read again split by another filter the list APIs offer, creation time
(CREATION_BUCKETS, which together cover every possible createAt, each halved once more if it
drifts); when every part reads consistently and together they hold every record the unfiltered
reads saw, the window is complete. Otherwise what was read is accepted (the stream must not stop)
and ``on_inconsistent`` records it (sync_state.inconsistent_windows, /metrics).

Totals that lie the other ways (temu-api.md, paging hazard: "a correct sync detects and repairs
this"). Too LOW: when the last page by the total comes back full, or the pages hold more records
than the total, the pages after it are read one by one until a short page, an empty one or one
with nothing new (a server ignoring the page number), at most MAX_WINDOW_PAGES; the cursor moves
only after that. No total at all (absent, -1: engine/temu/api.py) is paged the same way. Too
HIGH, or absent, the same way twice: two passes that read the same records under the same total
are a server miscount, not drift (records only leave): what was read is accepted, the cursor
moves and ``on_inconsistent`` records it, unless the total asked for several pages and the window
can still be halved (a page the server always answers empty looks the same, and halves need
fewer pages).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from engine.store.store import CursorAdvance
from engine.sync.windows import Window
from engine.temu.api import Page
from engine.temu.errors import TemuError
from engine.temu.limiter import Lane

log = logging.getLogger(__name__)

Item = dict[str, Any]


# At the planner's ~100 pages a window, only a bogus total (or a one-second burst beyond any
# real shop) gets here.
MAX_WINDOW_PAGES = 1000
_DAY = 86400
# Creation-time parts of a one-second update window, as seconds back from its end: together
# [0, end] (a record is created before it is updated; 0 also covers a nonsense createAt).
CREATION_BUCKETS = (365 * _DAY, 30 * _DAY, 7 * _DAY, _DAY)
_CREATION_HALVINGS = 1  # a part that drifts is halved this many times at most


class StreamAdapter(Protocol):
    """One shop's view of one stream (orders or returns)."""

    stream: str
    page_size: int

    async def fetch(
        self, page: int, window: Window, lane: Lane, created: Window | None = None
    ) -> Page:
        """A page of the records updated in ``window`` (and created in ``created``)."""
        ...

    def key(self, item: Item) -> str | None: ...

    async def write(self, items: list[Item], advance: CursorAdvance | None) -> None: ...

    async def set_aside(self, elements: Sequence[Any]) -> None:
        """Elements of a page's list that are not records at all (rejected_records)."""
        ...

    async def after_walk(self, lane: Lane, started: datetime) -> None:
        """After a successful walk of a range (returns: read pending logistics again)."""
        ...


@dataclass
class WindowRead:
    total: int
    consistent: bool
    pages: int
    drift_events: int
    # The records a pass read and the total it was given, when every page agreed on it:
    # two passes alike are a stable server miscount (_read_window), not drift.
    signature: tuple[frozenset[int], frozenset[str], int] | None = None
    paged: bool = False  # the total asked for more than one page


class _HoldLastWriter:
    """Writes pages as they arrive but keeps the latest one back, so that the cursor advance
    can be committed in the same transaction as the last rows of the window."""

    def __init__(self, adapter: StreamAdapter) -> None:
        self._adapter = adapter
        self._held: list[Item] | None = None

    async def push(self, page: Page) -> None:
        if page.odd:
            # Nothing of them can be stored, so they need no place in the window's commit: a
            # crash before it reads the page again and finds the same record (seen twice).
            await self._adapter.set_aside(page.odd)
        if self._held is not None:
            await self._adapter.write(self._held, None)
        self._held = page.items

    async def finish(self, advance: CursorAdvance | None) -> None:
        if self._held is not None or advance is not None:
            await self._adapter.write(self._held or [], advance)
        self._held = None


def plausible(adapter: StreamAdapter, page: Page) -> bool:
    """False for a total no window of ours can hold (MAX_WINDOW_PAGES): not to be trusted."""
    return _plausible_total(adapter, page.total)


def _plausible_total(adapter: StreamAdapter, total: int) -> bool:
    return total <= MAX_WINDOW_PAGES * adapter.page_size


async def _fetch(
    adapter: StreamAdapter, page: int, window: Window, lane: Lane, created: Window | None
) -> Page:
    if created is None:
        return await adapter.fetch(page, window, lane)
    return await adapter.fetch(page, window, lane, created)


def page_count(adapter: StreamAdapter, total: int) -> int:
    """Pages a window of ``total`` records takes (at least one, at most MAX_WINDOW_PAGES)."""
    return max(1, min(MAX_WINDOW_PAGES, math.ceil(total / adapter.page_size)))


def full(adapter: StreamAdapter, page: Page) -> bool:
    """Whether another page may follow this one (every place of the page was taken)."""
    return len(page.items) + page.skipped >= adapter.page_size


def pages_by_total(adapter: StreamAdapter, first: Page) -> int:
    """Pages asked at once; a total that cannot be read or trusted asks one, then reads on
    while pages come back full (_read_on)."""
    if not first.total_known or not plausible(adapter, first):
        return 1
    return page_count(adapter, first.total)


class _Pass:
    """What one pass over a window's pages saw."""

    def __init__(self, adapter: StreamAdapter, first: Page) -> None:
        self._adapter = adapter
        self.total = first.total
        self.total_known = first.total_known
        self.totals: set[int] = set()  # the totals the pages reported (none: no count)
        self.seen: set[str] = set()
        self.unkeyed = 0
        self.pages = 0
        self.capped = False  # read on to MAX_WINDOW_PAGES and pages still brought new records
        self.places: dict[int, int] = {}  # page number -> places it held (records and odd)

    def account(self, page: Page) -> bool:
        """Notes a page; False when it brought nothing new (a server ignoring the page
        number answers the same records again: reading on would never end)."""
        self.pages += 1
        if page.total_known:  # else ``total`` is only the page's own length
            self.totals.add(page.total)
        self.total_known = self.total_known and page.total_known
        self.unkeyed += page.skipped  # dropped non-objects still took a place in the listing
        before, keyed = len(self.seen), 0
        for item in page.items:
            k = self._adapter.key(item)
            if k is None:
                self.unkeyed += 1
            else:
                keyed += 1
                self.seen.add(k)
        return not keyed or len(self.seen) > before

    def place(self, page_no: int, page: Page) -> None:
        self.places[page_no] = len(page.items) + page.skipped

    def holed(self, page_size: int) -> bool:
        """A short page before one holding records: the pages, not the total, are wrong
        (cutting the window smaller is what helps)."""
        last = max((p for p, n in self.places.items() if n), default=0)
        return any(n < page_size for p, n in self.places.items() if p < last)

    @property
    def listed(self) -> int:
        return len(self.seen) + self.unkeyed

    @property
    def consistent(self) -> bool:
        # Records only leave a past window: every page agreeing on a total that the pages
        # together fill means none was skipped. No total, or a bogus one: nothing to check.
        return (
            self.total_known
            and len(self.totals) == 1
            and _plausible_total(self._adapter, self.total)
            and self.listed >= self.total
            and not self.capped
        )

    def signature(self) -> tuple[frozenset[int], frozenset[str], int] | None:
        """Equal for two passes that read the same records under the same stable total: a
        server miscount (temu-api.md's paging hazard cannot explain it), not drift."""
        if len(self.totals) > 1 or self.capped or self.holed(self._adapter.page_size):
            return None
        return frozenset(self.totals), frozenset(self.seen), self.unkeyed


async def _read_once(
    adapter: StreamAdapter,
    window: Window,
    lane: Lane,
    first: Page,
    advance: CursorAdvance | None,
    max_in_flight: int,
    *,
    created: Window | None = None,
    keys: set[str] | None = None,
    ahead: dict[int, asyncio.Future[Page]] | None = None,
    on_all_requested: Callable[[], None] | None = None,
) -> WindowRead:
    """One pass over every page; ``keys`` collects the keys seen.

    ``ahead``: pages of this window already requested (by the walker, before the pass);
    ``on_all_requested`` is called once every other page has been handed to the pacer.
    """
    n_pages = pages_by_total(adapter, first)
    ahead = ahead or {}
    seen = _Pass(adapter, first)
    writer = _HoldLastWriter(adapter)
    seen.account(first)
    await writer.push(first)

    gate = asyncio.Semaphore(max_in_flight)
    to_request = [p for p in range(2, n_pages + 1) if p not in ahead]
    requested = 0

    def note_requested() -> None:
        nonlocal requested
        requested += 1
        if requested == len(to_request) and on_all_requested is not None:
            on_all_requested()

    async def fetch(page_no: int) -> Page:
        async with gate:
            note_requested()
            return await _fetch(adapter, page_no, window, lane, created)

    futures = {p: ahead.pop(p) for p in range(2, n_pages + 1) if p in ahead}
    futures |= {p: asyncio.ensure_future(fetch(p)) for p in to_request}
    tasks = list(futures.values())
    if not to_request and on_all_requested is not None:
        on_all_requested()
    try:
        for fut in asyncio.as_completed(tasks):
            page = await fut
            seen.account(page)
            await writer.push(page)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    seen.place(1, first)
    for page_no, fut in futures.items():
        seen.place(page_no, fut.result())
    last = futures[n_pages].result() if n_pages > 1 else first
    if full(adapter, last) or seen.listed > seen.total or not seen.total_known:
        await _read_on(adapter, window, lane, created, n_pages + 1, seen, writer)

    if keys is not None:
        keys |= seen.seen
    consistent = seen.consistent
    await writer.finish(advance if consistent else None)
    return WindowRead(
        total=seen.total if seen.total_known else seen.listed,
        consistent=consistent,
        pages=seen.pages,
        drift_events=0 if consistent else 1,
        signature=seen.signature(),
        paged=n_pages > 1,
    )


async def _read_on(
    adapter: StreamAdapter,
    window: Window,
    lane: Lane,
    created: Window | None,
    page_no: int,
    seen: _Pass,
    writer: _HoldLastWriter,
) -> None:
    """Reads the pages after those the total asked for, one by one, until a short page or
    one with nothing new: a total lower than what the pages hold (or none at all) must not
    leave records unread and the cursor moved past them (temu-api.md, paging hazard)."""
    while page_no <= MAX_WINDOW_PAGES:
        page = await _fetch(adapter, page_no, window, lane, created)
        fresh = seen.account(page)
        seen.place(page_no, page)
        await writer.push(page)
        if not full(adapter, page) or not fresh:
            return
        page_no += 1
    seen.capped = True
    log.warning(
        "a window still listed new records after %d pages; not trusting it",
        MAX_WINDOW_PAGES,
        extra={"stream": adapter.stream, "window": f"{window.start}-{window.end}"},
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
    on_inconsistent: Callable[[Window], Awaitable[None]] | None = None,
    ahead: dict[int, asyncio.Future[Page]] | None = None,
    on_all_requested: Callable[[], None] | None = None,
) -> WindowRead:
    """Reads ``window`` until one pass is consistent, splitting it if it keeps drifting.

    ``max_in_flight`` bounds the pages one (shop, stream) has queued at the app's pacer: enough
    to keep 20 requests/s going at round trips up to ~1.5 s, few enough that shops of one app
    interleave instead of taking turns a whole window at a time.

    ``ahead`` holds pages after ``first`` already requested (the first pass uses them, the
    rest are cancelled); ``on_all_requested`` is called when a pass has handed its last page
    to the pacer (the walker then requests the next window's first pages).

    The cursor advance for a (sub)window is committed with that window's last page.
    """
    try:
        return await _read_window(
            adapter,
            window,
            lane,
            advance_for=advance_for,
            first=first,
            attempts=attempts,
            max_in_flight=max_in_flight,
            on_drift=on_drift,
            on_inconsistent=on_inconsistent,
            ahead=ahead,
            on_all_requested=on_all_requested,
        )
    finally:
        for left in (ahead or {}).values():
            left.cancel()  # pages of a pass that never ran, or beyond a shrunken total


async def _read_window(
    adapter: StreamAdapter,
    window: Window,
    lane: Lane,
    *,
    advance_for: Callable[[Window], CursorAdvance | None],
    first: Page | None,
    attempts: int,
    max_in_flight: int,
    on_drift: Callable[[Window], Awaitable[None] | None] | None,
    on_inconsistent: Callable[[Window], Awaitable[None]] | None,
    ahead: dict[int, asyncio.Future[Page]] | None,
    on_all_requested: Callable[[], None] | None,
) -> WindowRead:
    drift = 0
    keys: set[str] = set()  # every key the unfiltered reads saw (the one-second check)
    previous: tuple[frozenset[int], frozenset[str], int] | None = None
    for _ in range(attempts):
        if first is None:
            first = await adapter.fetch(1, window, lane)
        if not plausible(adapter, first) and full(adapter, first):
            break  # re-reading a bogus total does not help: split instead
        result = await _read_once(
            adapter,
            window,
            lane,
            first,
            advance_for(window),
            max_in_flight,
            keys=keys,
            ahead=ahead,
            on_all_requested=on_all_requested,
        )
        first = None
        ahead = None  # the first pass took what it could use
        if result.consistent:
            result.drift_events += drift
            return result
        if result.signature is not None and result.signature == previous:
            if result.paged and window.span > 1:
                # Or a page the server always answers empty: halves need fewer pages.
                break
            # A window read twice alike under a total its pages never matched (too high,
            # missing, bogus): the server miscounts, records did not move. Re-reading or
            # splitting it would only repeat the miscount (seen: tens of thousands of calls,
            # the stream stalled).
            await _accept_inconsistent(
                adapter,
                window,
                advance_for,
                on_inconsistent,
                "window's total never matched its pages, twice alike: a server miscount; "
                "accepting what was read",
            )
            result.drift_events += drift
            return result
        previous = result.signature
        drift += 1
        log.info(
            "records moved while paging; reading the window again",
            extra={"stream": adapter.stream, "window": f"{window.start}-{window.end}"},
        )
        if on_drift is not None:
            maybe = on_drift(window)
            if maybe is not None:
                await maybe
    if first is not None:  # an implausible total: keep its records, trust nothing else
        log.warning(
            "total %d would take more than %d pages; splitting the window without paging it",
            first.total,
            MAX_WINDOW_PAGES,
            extra={"stream": adapter.stream, "window": f"{window.start}-{window.end}"},
        )
        await _keep(adapter, first, keys)
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
                on_inconsistent=on_inconsistent,
            )
            total += sub.total
            pages += sub.pages
            drift += sub.drift_events
        return WindowRead(total=total, consistent=True, pages=pages, drift_events=drift)
    parts = _CreationSplit(adapter, window, lane, attempts, max_in_flight)
    consistent = await parts.read() and keys <= parts.keys
    # Either way the stream goes on: the cursor moves past this second.
    if consistent:
        await adapter.write([], advance_for(window))
    else:
        await _accept_inconsistent(
            adapter,
            window,
            advance_for,
            on_inconsistent,
            "window never read consistently, not even split by creation time; accepting what "
            "was read (records may be missing)",
        )
    return WindowRead(
        total=len(keys | parts.keys), consistent=consistent, pages=parts.pages, drift_events=drift
    )


async def _accept_inconsistent(
    adapter: StreamAdapter,
    window: Window,
    advance_for: Callable[[Window], CursorAdvance | None],
    on_inconsistent: Callable[[Window], Awaitable[None]] | None,
    why: str,
) -> None:
    """A server-side inconsistency, not drift: what was read (already stored) is accepted,
    the cursor moves, and the operator is told where they look (sync_state.
    inconsistent_windows, /metrics), not only in a log."""
    await adapter.write([], advance_for(window))
    log.warning(why, extra={"stream": adapter.stream, "window": f"{window.start}-{window.end}"})
    if on_inconsistent is not None:
        await on_inconsistent(window)


async def _keep(adapter: StreamAdapter, page: Page, keys: set[str]) -> None:
    """Stores a page read outside a complete pass (no cursor move) and notes its keys."""
    await adapter.write(page.items, None)
    keys.update(k for k in map(adapter.key, page.items) if k is not None)


class _CreationSplit:
    """A one-second update window read again as parts by creation time (module docstring)."""

    def __init__(
        self, adapter: StreamAdapter, window: Window, lane: Lane, attempts: int, in_flight: int
    ) -> None:
        self._adapter, self._window, self._lane = adapter, window, lane
        self._attempts, self._in_flight = attempts, in_flight
        self.keys: set[str] = set()
        self.pages = 0

    async def read(self) -> bool:
        end = self._window.end
        edges = [0, *(max(0, end - back) for back in CREATION_BUCKETS), end + 1]
        ok = True
        try:
            for lo, hi in itertools.pairwise(edges):
                if lo < hi:
                    ok = await self._part(Window(lo, hi - 1), _CREATION_HALVINGS) and ok
        except TemuError as exc:
            if exc.scope != "call" or exc.retryable:
                raise  # the shop's or app's trouble, or a passing one: the pass fails
            # temu-api.md lists the update pair "or" the creation pair: a list API that
            # refuses both together must not stall the stream on this one second.
            log.warning(
                "splitting a window by creation time was refused (%s); accepting what was read",
                exc,
                extra={"stream": self._adapter.stream},
            )
            return False
        return ok

    async def _part(self, created: Window, halvings: int) -> bool:
        adapter = self._adapter
        for _ in range(self._attempts):
            first = await adapter.fetch(1, self._window, self._lane, created)
            self.pages += 1
            if not plausible(adapter, first):
                await _keep(adapter, first, self.keys)
                break
            read = await _read_once(
                adapter,
                self._window,
                self._lane,
                first,
                None,
                self._in_flight,
                created=created,
                keys=self.keys,
            )
            self.pages += read.pages - 1
            if read.consistent:
                return True
        if halvings <= 0 or created.span <= 1:
            return False
        ok = True
        for half in created.halves():
            ok = await self._part(half, halvings - 1) and ok
        return ok
