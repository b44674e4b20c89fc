"""The window walker against an in-memory list source that drifts like Temu's.

No network and no database: the source sorts newest first and can move a record to "now"
between two page reads, which is exactly the hazard the pager must survive.
"""

from __future__ import annotations

import asyncio
import bisect
import random
from typing import Any

from engine.store.store import CursorAdvance
from engine.sync.pager import read_window
from engine.sync.walker import WalkResult, walk_range
from engine.sync.windows import SpanPlanner, Window
from engine.temu.api import Page
from engine.temu.limiter import AppPacer, Lane
from tests.virtual_time import run_virtual


class DriftingSource:
    """Records (sn, update_time); each page read may first move one unread record to now."""

    def __init__(self, n: int, start: int, end: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.records = {f"R{i:06d}": self.rng.randint(start, end) for i in range(n)}
        self.now = end + 10_000
        self.drift_rate = 0.0
        self.moved: set[str] = set()
        self.requests = 0

    def _in_window(self, w: Window) -> list[tuple[int, str]]:
        return sorted(
            ((t, sn) for sn, t in self.records.items() if w.start <= t <= w.end), reverse=True
        )

    def page(self, page: int, size: int, w: Window) -> Page:
        self.requests += 1
        rows = self._in_window(w)
        if rows and self.rng.random() < self.drift_rate:
            _, sn = self.rng.choice(rows)
            self.records[sn] = self.now
            self.now += 1
            self.moved.add(sn)
            rows = self._in_window(w)
        chunk = rows[(page - 1) * size : page * size]
        return Page(total=len(rows), items=[{"sn": sn, "updateTime": t} for t, sn in chunk])


class Adapter:
    stream = "orders"

    def __init__(self, source: DriftingSource, page_size: int = 10) -> None:
        self.source = source
        self.page_size = page_size
        self.stored: dict[str, dict[str, Any]] = {}
        self.advances: list[CursorAdvance] = []
        self.writes = 0

    async def fetch(self, page: int, window: Window, lane: Lane) -> Page:
        return self.source.page(page, self.page_size, window)

    def key(self, item: dict[str, Any]) -> str | None:
        sn = item.get("sn")
        return sn if isinstance(sn, str) else None

    async def write(self, items: list[dict[str, Any]], advance: CursorAdvance | None) -> None:
        self.writes += 1
        for item in items:
            self.stored[item["sn"]] = item
        if advance is not None:
            self.advances.append(advance)


def _advance(w: Window) -> CursorAdvance:
    from engine.sync.walker import to_datetime

    return CursorAdvance(stream="orders", kind="incremental", position=to_datetime(w.end))


async def test_window_without_drift_reads_everything_once() -> None:
    src = DriftingSource(95, 1000, 2000)
    ad = Adapter(src)
    result = await read_window(ad, Window(1000, 2000), Lane.BACKFILL, advance_for=_advance)
    assert result.consistent and result.drift_events == 0
    assert set(ad.stored) == set(src.records)
    assert src.requests == 10  # 95 records, 10 per page: no wasted request
    assert len(ad.advances) == 1 and ad.advances[0].position.timestamp() == 2000


async def test_drift_never_loses_an_unchanged_record() -> None:
    for seed in range(20):
        src = DriftingSource(300, 1000, 5000, seed=seed)
        src.drift_rate = 0.15
        ad = Adapter(src)
        result = await read_window(ad, Window(1000, 5000), Lane.BACKFILL, advance_for=_advance)
        unchanged = set(src.records) - src.moved
        assert unchanged <= set(ad.stored), f"seed {seed}: lost {unchanged - set(ad.stored)}"
        assert result.consistent
        assert ad.advances, "the cursor must advance once the window is complete"


async def test_without_the_check_drift_would_lose_records() -> None:
    """Guards the test above: the source really does shift records past a naive pager."""
    src = DriftingSource(300, 1000, 5000, seed=3)
    src.drift_rate = 0.15
    seen: set[str] = set()
    total = src.page(1, 10, Window(1000, 5000)).total
    for p in range(1, total // 10 + 2):
        seen |= {i["sn"] for i in src.page(p, 10, Window(1000, 5000)).items}
    assert set(src.records) - src.moved - seen, "expected the naive pager to miss something"


async def test_walk_range_adapts_windows_and_advances_cursor_in_order() -> None:
    src = DriftingSource(2000, 0, 100_000, seed=5)
    ad = Adapter(src, page_size=10)
    planner = SpanPlanner(span=1000, target_items=200, max_items=400)
    walked = await walk_range(
        ad, kind="incremental", start=0, end=100_000, lane=Lane.BACKFILL, planner=planner
    )
    assert set(ad.stored) == set(src.records)
    positions = [a.position.timestamp() for a in ad.advances]
    assert positions == sorted(positions) and positions[-1] == 100_000
    assert walked.records == 2000
    # Windows grew from the first 1000-second guess towards ~200 records each.
    assert walked.windows < 40


async def test_walk_range_with_drift_loses_nothing() -> None:
    src = DriftingSource(1500, 0, 50_000, seed=11)
    src.drift_rate = 0.05
    ad = Adapter(src, page_size=10)
    planner = SpanPlanner(span=5000, target_items=300, max_items=600)
    await walk_range(
        ad, kind="incremental", start=0, end=50_000, lane=Lane.BACKFILL, planner=planner
    )
    assert set(src.records) - src.moved <= set(ad.stored)


async def test_empty_page_before_total_is_retried_not_trusted() -> None:
    src = DriftingSource(50, 0, 1000, seed=2)
    ad = Adapter(src, page_size=10)
    real_page = src.page
    calls = {"n": 0}

    def flaky(page: int, size: int, w: Window) -> Page:
        calls["n"] += 1
        p = real_page(page, size, w)
        if page == 3 and calls["n"] < 6:
            return Page(total=p.total, items=[])
        return p

    src.page = flaky  # type: ignore[method-assign]
    result = await read_window(ad, Window(0, 1000), Lane.BACKFILL, advance_for=_advance)
    assert set(ad.stored) == set(src.records)
    assert result.consistent and result.drift_events >= 1


class LyingSource:
    """Records (sn, update, create) in one busy second. Unfiltered lists report ``bogus_total``
    instead of the true total (when set); lists filtered by creation time are honest unless
    ``always_lie``."""

    def __init__(self, n: int, second: int, bogus_total: int | None, always_lie: bool = False):
        self.records = {f"R{i:04d}": (second, second - 1000 * i) for i in range(n)}
        self.bogus_total = bogus_total
        self.always_lie = always_lie
        self.requests = 0
        self.max_page = 0

    def page(self, page: int, size: int, w: Window, created: Window | None) -> Page:
        self.requests += 1
        self.max_page = max(self.max_page, page)
        rows = sorted(
            (
                (u, sn)
                for sn, (u, c) in self.records.items()
                if w.start <= u <= w.end and (created is None or created.start <= c <= created.end)
            ),
            reverse=True,
        )
        total = len(rows)
        if self.bogus_total is not None and (created is None or self.always_lie) and rows:
            total = self.bogus_total
        chunk = rows[(page - 1) * size : page * size]
        return Page(total=total, items=[{"sn": sn, "updateTime": u} for u, sn in chunk])


class FilteringAdapter(Adapter):
    async def fetch(  # type: ignore[override]
        self, page: int, window: Window, lane: Lane, created: Window | None = None
    ) -> Page:
        return self.source.page(page, self.page_size, window, created)  # type: ignore[attr-defined]


async def test_a_bogus_total_is_not_paged_and_the_second_is_split_by_creation_time() -> None:
    second = 1_700_000_000
    src = LyingSource(25, second, bogus_total=10**12)
    ad = FilteringAdapter(src, page_size=10)  # type: ignore[arg-type]
    noted: list[Window] = []

    async def note(w: Window) -> None:
        noted.append(w)

    result = await read_window(
        ad,
        Window(second - 3600, second),
        Lane.BACKFILL,
        advance_for=_advance,
        on_inconsistent=note,
    )
    assert set(ad.stored) == set(src.records)
    # Halved without paging down to the busy second, then read by creation-time parts.
    assert src.max_page <= 3 and src.requests < 60, (src.max_page, src.requests)
    assert result.consistent and noted == []
    assert ad.advances[-1].position.timestamp() == second


async def test_a_second_that_never_reads_consistently_is_accepted_and_noted() -> None:
    second = 1_700_000_000
    src = LyingSource(25, second, bogus_total=26, always_lie=True)
    ad = FilteringAdapter(src, page_size=10)  # type: ignore[arg-type]
    noted: list[Window] = []

    async def note(w: Window) -> None:
        noted.append(w)

    result = await read_window(
        ad, Window(second, second), Lane.BACKFILL, advance_for=_advance, on_inconsistent=note
    )
    assert set(ad.stored) == set(src.records), "what was read is kept"
    assert not result.consistent and noted == [Window(second, second)]
    assert ad.advances[-1].position.timestamp() == second, "the stream moves on"


class PacedAdapter(Adapter):
    """Every page goes through an AppPacer and takes a round trip; every write takes a while,
    as a Postgres transaction does. Records the pacer's grants."""

    def __init__(self, source: DriftingSource, pacer: AppPacer, rtt_s: float, write_s: float):
        super().__init__(source, page_size=10)
        self.pacer, self.rtt_s, self.write_s = pacer, rtt_s, write_s
        self.grants: list[float] = []

    async def fetch(self, page: int, window: Window, lane: Lane) -> Page:
        send = await self.pacer.acquire(lane)
        self.grants.append(send.granted_at)
        await asyncio.sleep(self.rtt_s)
        self.pacer.on_answer(send)
        return self.source.page(page, self.page_size, window)

    async def write(self, items: list[dict[str, Any]], advance: CursorAdvance | None) -> None:
        await asyncio.sleep(self.write_s)
        await super().write(items, advance)


def test_the_pacer_never_idles_between_windows() -> None:
    walked, ad, src = run_virtual(_walk_paced)
    assert set(ad.stored) == set(src.records)
    positions = [a.position.timestamp() for a in ad.advances]
    assert positions == sorted(positions) and positions[-1] == 100_000
    assert walked.windows >= 8
    # Pages requested ahead are pages the walk needed: no request wasted.
    assert src.requests == walked.pages
    # The grants keep the limit across every hand-off (20.09/s over this short span: the first
    # and the last second are full). A pacer left idle while the last page of a window comes
    # back and is written (~0.13 s each) made it 18.68/s; requesting the next window's first
    # page early but none of its other pages ahead, 19.61/s.
    grants = ad.grants
    assert (len(grants) - 1) / (grants[-1] - grants[0]) > 19.9
    assert max(bisect.bisect_left(grants, t + 1.0) - i for i, t in enumerate(grants)) <= 20


async def _walk_paced() -> tuple[WalkResult, PacedAdapter, DriftingSource]:
    src = DriftingSource(1000, 0, 100_000, seed=3)
    ad = PacedAdapter(src, AppPacer(20), rtt_s=0.1, write_s=0.03)
    planner = SpanPlanner(span=10_000, target_items=100, max_items=200)
    walked = await walk_range(
        ad, kind="incremental", start=0, end=100_000, lane=Lane.BACKFILL, planner=planner
    )
    return walked, ad, src


class MiscountingSource(DriftingSource):
    """Reports ``total`` through ``miscount`` (the true count in, the count sent out; None:
    no count at all), and can ignore the page number (answers page 1 every time)."""

    def __init__(self, n: int, start: int, end: int, miscount: Any) -> None:
        super().__init__(n, start, end)
        self.miscount = miscount
        self.ignore_page_no = False

    def page(self, page: int, size: int, w: Window, created: Window | None = None) -> Page:
        # A creation-time filter is ignored: those parts hold the update window's records.
        real = super().page(1 if self.ignore_page_no else page, size, w)
        total = self.miscount(real.total)
        if total is None:
            return Page(total=len(real.items), items=real.items, total_known=False)
        return Page(total=total, items=real.items)


def _noting() -> tuple[list[Window], Any]:
    noted: list[Window] = []

    async def note(w: Window) -> None:
        noted.append(w)

    return noted, note


async def test_a_total_lower_than_the_pages_hold_loses_nothing() -> None:
    """Finding 1: page_count asked only ceil(total / size) pages; the rest were never read,
    and the cursor moved past them."""
    for lie in (3, 5):  # 13 records said 10 (last page full), 13 said 8 (more keys seen)
        src = MiscountingSource(13, 1000, 2000, lambda t, lie=lie: max(0, t - lie))
        ad = Adapter(src)
        noted, note = _noting()
        result = await read_window(
            ad, Window(1000, 2000), Lane.BACKFILL, advance_for=_advance, on_inconsistent=note
        )
        assert set(ad.stored) == set(src.records), f"total {13 - lie}: records lost"
        assert ad.advances[-1].position.timestamp() == 2000
        assert result.total == 13 - lie and src.requests <= 3 and noted == []


async def test_a_stable_total_too_high_is_accepted_not_split_forever() -> None:
    """Finding 2: "says 5, sends 0", or 5 too many: the same answer twice is a server
    miscount, accepted and noted; the cursor moves. (Where the total asks for more than one
    page, halves are tried first: an always-empty page 2 looks the same, test_bad_input.)"""
    for n, lie, most in ((0, 5, 2), (7, 5, 80)):
        src = MiscountingSource(n, 1000, 200_000, lambda t, lie=lie: t + lie)
        ad = Adapter(src)
        noted, note = _noting()
        await read_window(
            ad, Window(1000, 200_000), Lane.BACKFILL, advance_for=_advance, on_inconsistent=note
        )
        assert set(ad.stored) == set(src.records)
        assert ad.advances[-1].position.timestamp() == 200_000
        assert noted and src.requests <= most, (noted, src.requests)
    assert noted != [Window(1000, 200_000)]  # 7 said 12: split, then each part accepted


async def test_a_bogus_total_in_every_window_does_not_stall_the_walk() -> None:
    src = MiscountingSource(40, 0, 5 * 86400, lambda t: 10**12)
    ad = FilteringAdapter(src, page_size=10)  # type: ignore[arg-type]
    noted, note = _noting()
    planner = SpanPlanner(span=3600, target_items=100, max_items=200)
    await walk_range(
        ad,
        kind="backfill",
        start=0,
        end=5 * 86400,
        lane=Lane.BACKFILL,
        planner=planner,
        on_inconsistent=note,
    )
    assert set(ad.stored) == set(src.records)
    assert ad.advances[-1].position.timestamp() == 5 * 86400
    assert noted and src.requests < 400, src.requests


async def test_a_window_without_a_readable_total_is_paged_to_a_short_page() -> None:
    """Finding 3: a total missing (or -1, "many") is a page all the same."""
    src = MiscountingSource(45, 1000, 2000, lambda t: None)
    ad = Adapter(src)
    noted, note = _noting()
    await read_window(
        ad, Window(1000, 2000), Lane.BACKFILL, advance_for=_advance, on_inconsistent=note
    )
    assert set(ad.stored) == set(src.records)
    assert ad.advances[-1].position.timestamp() == 2000 and noted == [Window(1000, 2000)]
    assert src.requests == 10  # 5 pages, twice


async def test_a_server_ignoring_the_page_number_is_not_paged_forever() -> None:
    src = MiscountingSource(10, 1000, 2000, lambda t: None)
    src.ignore_page_no = True
    ad = Adapter(src)
    await read_window(ad, Window(1000, 2000), Lane.BACKFILL, advance_for=_advance)
    assert set(ad.stored) == set(src.records) and src.requests == 4  # pages 1, 2, twice
    assert ad.advances[-1].position.timestamp() == 2000
