"""Turns stored webhook events into targeted re-reads (interface.md "Webhooks").

An event is a hint, not a record: the consumer re-reads the narrow ``updateTime`` window around
it through the same window reader and diff writer as the sync (so ``changes`` rows appear as
usual) without moving any cursor, on the pacer's events lane. A burst is coalesced: events of
one shop and stream whose windows touch are read as ONE window, and the consumer waits a short
moment after being woken so that a burst lands in one batch.

Temu's list may lag behind its events (the less convenient reading of a silent spec): when an
event names a record and the read did not show it at the event's update time or later, the
event is retried with backoff (its window then reaching up to now, in case the record moved on)
and finally recorded as ``not_found``; polling stays the safety net either way. Events without
an update time re-read the shop's recent window (now - overlap .. now).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from engine.counters import RunCounters
from engine.store.events import EventStore, StoredEvent
from engine.store.store import CursorAdvance, Store
from engine.sync.orders import OrdersAdapter
from engine.sync.pager import StreamAdapter, read_window
from engine.sync.returns import ReturnsAdapter
from engine.sync.windows import Window
from engine.temu.api import Page, TemuShopApi
from engine.temu.errors import AppNotOwned
from engine.temu.limiter import Lane
from engine.temu.webhooks import (
    ADDRESS_CHANGED,
    AFTERSALES_STATUS,
    CANCEL_ORDER_STATUS,
    ORDER_STATUS,
)

log = logging.getLogger(__name__)

ORDER_CODES = frozenset({ORDER_STATUS, CANCEL_ORDER_STATUS, ADDRESS_CHANGED})
RETURN_CODES = frozenset({AFTERSALES_STATUS})

READ = "read"
NOT_FOUND = "not_found"
GAVE_UP = "gave_up"


@dataclass(frozen=True)
class ConsumerSettings:
    pad_s: int = 5  # the window reaches this far either side of the event's update time
    merge_gap_s: int = 60  # windows of one shop and stream closer than this are read as one
    recent_s: int = 600  # events without an update time: now - recent_s .. now (sync.overlap_s)
    settle_s: float = 0.3  # after a wake-up, wait this long so a burst is one batch
    poll_s: float = 2.0  # look for due events (retries, other processes' events) this often
    batch: int = 500
    lease_s: float = 120.0
    max_attempts: int = 8
    not_found_attempts: int = 3  # a record the list does not show yet: retries before giving up
    backoff_s: float = 2.0  # doubled per attempt
    max_backoff_s: float = 600.0


class ConsumerObserver(Protocol):
    def on_processed(self, code: str, outcome: str, latency_s: float) -> None: ...


class _NoObserver:
    def on_processed(self, code: str, outcome: str, latency_s: float) -> None:
        pass


class PassWatch(Protocol):
    """Who watches the consumer's passes (the daemon's health board): ``run`` wraps each pass
    and may cut off one that stops making progress, ``progress`` follows every claim and
    finished re-read, then a pass ``succeeded`` or ``failed``. Without it a consumer that
    fails pass after pass would only show in the log."""

    async def run(self, work: Awaitable[int]) -> int: ...

    def progress(self) -> None: ...

    def succeeded(self) -> None: ...

    def failed(self, exc: BaseException) -> None: ...


class _Unwatched:
    async def run(self, work: Awaitable[int]) -> int:
        return await work

    def progress(self) -> None:
        pass

    def succeeded(self) -> None:
        pass

    def failed(self, exc: BaseException) -> None:
        pass


class EventsReturnsAdapter(ReturnsAdapter):
    """Returns read for an event: lines and logistics also go on the events lane."""

    def _lane_for(self, advance: CursorAdvance | None) -> Lane:
        return Lane.EVENTS


@dataclass(frozen=True)
class EventShop:
    shop_id: str
    adapters: Mapping[str, StreamAdapter]  # "orders" / "returns"; absent when not synced


def event_shop(
    shop_id: str,
    api: TemuShopApi,
    store: Store,
    counters: RunCounters,
    *,
    orders: bool = True,
    returns: bool = True,
    orders_page_size: int | None = None,
    returns_page_size: int | None = None,
) -> EventShop:
    adapters: dict[str, StreamAdapter] = {}
    if orders:
        adapters["orders"] = OrdersAdapter(shop_id, api, store, counters, orders_page_size)
    if returns:
        adapters["returns"] = EventsReturnsAdapter(shop_id, api, store, counters, returns_page_size)
    return EventShop(shop_id, adapters)


def _update_of(stream: str, item: Mapping[str, Any]) -> int | None:
    if stream == "orders":
        parent = item.get("parentOrderMap")
        value = parent.get("updateTime") if isinstance(parent, dict) else None
    else:
        value = item.get("updateAt")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Recording:
    """Passes a stream adapter through and remembers the newest update time seen per key."""

    def __init__(self, inner: StreamAdapter) -> None:
        self._inner = inner
        self.stream = inner.stream
        self.page_size = inner.page_size
        self.seen: dict[str, int] = {}

    async def fetch(
        self, page: int, window: Window, lane: Lane, created: Window | None = None
    ) -> Page:
        return await self._inner.fetch(page, window, lane, created)

    def key(self, item: dict[str, Any]) -> str | None:
        return self._inner.key(item)

    async def after_walk(self, lane: Lane, started: datetime) -> None:
        await self._inner.after_walk(lane, started)

    async def set_aside(self, elements: Sequence[Any]) -> None:
        await self._inner.set_aside(elements)

    async def write(self, items: list[dict[str, Any]], advance: CursorAdvance | None) -> None:
        await self._inner.write(items, advance)
        for item in items:
            k = self._inner.key(item)
            if k is not None:
                t = _update_of(self.stream, item)
                self.seen[k] = max(self.seen.get(k, 0), t or 0)


def _streams(event: StoredEvent) -> tuple[str, ...]:
    if event.code in RETURN_CODES:
        return ("returns",)
    if event.code in ORDER_CODES:
        return ("orders", "returns") if event.parent_after_sales_sn else ("orders",)
    return ("orders", "returns")  # an unknown code: re-read what it could be about


def _target(event: StoredEvent, stream: str) -> str | None:
    """The key the read must show for this event, when the event names one."""
    if event.update_time is None:
        return None
    if stream == "orders":
        return event.parent_order_sn
    return event.parent_after_sales_sn


@dataclass
class _Job:
    shop_id: str
    stream: str
    window: Window
    events: list[StoredEvent] = field(default_factory=list)


class EventConsumer:
    def __init__(
        self,
        *,
        events: EventStore,
        shops: Sequence[EventShop],
        settings: ConsumerSettings | None = None,
        observer: ConsumerObserver | None = None,
        shop_ids: Collection[str] | Callable[[], Collection[str]] | None = None,
        clock: Callable[[], float] = time.time,
        watch: PassWatch | None = None,
    ) -> None:
        self._events = events
        self._shops = {s.shop_id: s for s in shops}
        self._settings = settings or ConsumerSettings()
        self._observer = observer or _NoObserver()
        # Only these shops' events are claimed: a daemon reads for the apps whose leases it
        # holds NOW (a callable, asked before every claim), and leaves the others' events in
        # the table for their owner.
        if shop_ids is None:
            fixed = sorted(self._shops)
            self._shop_ids: Callable[[], Collection[str]] = lambda: fixed
        elif callable(shop_ids):
            self._shop_ids = shop_ids
        else:
            fixed = sorted(shop_ids)
            self._shop_ids = lambda: fixed
        self._clock = clock
        self._watch: PassWatch = watch or _Unwatched()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A new event was stored: process it soon (the receiver's ``on_stored``)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Processes due events until ``stop`` is set; a failing pass is logged, reported to
        the watch and retried."""
        while not stop.is_set():
            try:
                while await self._watch.run(self.run_once()) >= self._settings.batch:
                    pass  # a full batch: more may be waiting
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("webhook event pass failed; trying again shortly")
                self._watch.failed(exc)
            else:
                self._watch.succeeded()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.poll_s):
                    await self._wake.wait()
            if self._wake.is_set() and not stop.is_set():
                await asyncio.sleep(self._settings.settle_s)
            self._wake.clear()

    async def run_once(self) -> int:
        """Claims one batch of due events, re-reads what they point at; returns how many."""
        s = self._settings
        shop_ids = sorted(self._shop_ids())
        if not shop_ids:
            return 0  # no app leased to this process: every event waits for its owner
        claimed = await self._events.claim(limit=s.batch, lease_s=s.lease_s, shop_ids=shop_ids)
        self._watch.progress()
        if not claimed:
            return 0
        jobs = self._plan(claimed)
        results = await asyncio.gather(*(self._run_job(j) for j in jobs), return_exceptions=True)
        failed: dict[int, str] = {}
        missing: set[int] = set()
        released: set[int] = set()
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, AppNotOwned):
                    # The lease moved while we held the claim: the new owner reads it.
                    released.update(e.id for e in job.events)
                    continue
                log.warning(
                    "re-read for %d webhook event(s) failed: %s",
                    len(job.events),
                    result,
                    extra={"shop": job.shop_id, "stream": job.stream},
                )
                for e in job.events:
                    failed[e.id] = str(result)
                continue
            for e in job.events:
                key = _target(e, job.stream)
                if key is not None and result.get(key, 0) < (e.update_time_s or 0):
                    missing.add(e.id)
        released -= failed.keys()
        if released:
            await self._events.release(sorted(released))
            log.info("%d webhook event(s) left to the app's new lease owner", len(released))
        await self._settle([e for e in claimed if e.id not in released], failed, missing)
        return len(claimed)

    def _plan(self, claimed: Sequence[StoredEvent]) -> list[_Job]:
        s = self._settings
        now = int(self._clock())
        spans: dict[tuple[str, str], list[tuple[int, int, StoredEvent]]] = defaultdict(list)
        for e in claimed:
            shop = self._shops.get(e.shop_id)
            if shop is None:
                continue  # not this consumer's shop (claims are filtered: only after a reload)
            for stream in _streams(e):
                if stream not in shop.adapters:
                    continue
                if e.update_time_s is None:
                    lo, hi = now - s.recent_s, now
                else:
                    lo, hi = e.update_time_s - s.pad_s, e.update_time_s + s.pad_s
                    if e.attempts > 1:
                        hi = max(hi, now)  # a retry: the record may have moved on since
                spans[(e.shop_id, stream)].append((lo, min(hi, now), e))
        jobs: list[_Job] = []
        for (shop_id, stream), items in spans.items():
            items.sort(key=lambda x: x[0])
            current: _Job | None = None
            for lo, hi, e in items:
                if current is not None and lo <= current.window.end + s.merge_gap_s:
                    current.window = Window(current.window.start, max(current.window.end, hi))
                else:
                    current = _Job(shop_id, stream, Window(lo, max(lo, hi)))
                    jobs.append(current)
                current.events.append(e)
        return jobs

    async def _run_job(self, job: _Job) -> dict[str, int]:
        adapter = _Recording(self._shops[job.shop_id].adapters[job.stream])
        await read_window(adapter, job.window, Lane.EVENTS, advance_for=lambda _w: None)
        self._watch.progress()
        return adapter.seen

    async def _settle(
        self, claimed: Sequence[StoredEvent], failed: Mapping[int, str], missing: set[int]
    ) -> None:
        s = self._settings
        by_id = {e.id: e for e in claimed}
        done = [e.id for e in claimed if e.id not in failed and e.id not in missing]
        not_found = [i for i in missing if i not in failed]
        # Give up on a record the list never shows once its own retries are spent.
        final_nf = [i for i in not_found if by_id[i].attempts >= s.not_found_attempts]
        retry_nf = [i for i in not_found if i not in final_nf]
        for outcome, ids in ((READ, done), (NOT_FOUND, final_nf)):
            if ids:
                for p in await self._events.mark_processed(ids, outcome):
                    latency = (p.processed_at - p.received_at).total_seconds()
                    self._observer.on_processed(by_id[p.id].code, outcome, latency)
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i, err in failed.items():
            groups[(err, by_id[i].attempts)].append(i)
        for i in retry_nf:
            groups[("the list did not show the record yet", by_id[i].attempts)].append(i)
        for (err, attempts), ids in groups.items():
            backoff = min(s.max_backoff_s, s.backoff_s * 2 ** (attempts - 1))
            gave_up = await self._events.fail(
                ids, err, backoff_s=backoff, max_attempts=s.max_attempts
            )
            for i in gave_up:
                self._observer.on_processed(by_id[i].code, GAVE_UP, 0.0)
