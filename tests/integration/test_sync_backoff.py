"""A stream failing pass after pass backs off (issue 12): sync_state counts the failed passes
in a row, and from the third on the stream is skipped (no Temu call) until retry_after; a
success resets it; `status` says "backing off until ..." with the error class."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.cli.status import _error_cell
from engine.config import SyncSettings
from engine.counters import RunCounters
from engine.store.store import CursorAdvance, Store
from engine.sync.service import ShopHandle, SyncService
from engine.sync.windows import Window
from engine.temu.api import Page
from engine.temu.limiter import Lane

SHOP = "s1"


class Flaky:
    """An orders adapter whose every fetch raises while ``broken``."""

    stream = "orders"
    page_size = 100

    async def fetch(self, page: int, window: Window, lane: Lane) -> Page:
        self.fetches += 1
        if self.broken:
            raise self.error
        return Page(total=0, items=[])

    def key(self, item: dict[str, Any]) -> str | None:
        return None

    def __init__(self, store: Store) -> None:
        self.broken = True
        self.error: Exception = ValueError("a status Temu never documented")
        self.fetches = 0
        self._store = store

    async def write(self, items: list[dict[str, Any]], advance: CursorAdvance | None) -> None:
        if advance is not None:
            await self._store.advance_cursor(SHOP, advance)

    async def after_walk(self, lane: Lane, started: datetime) -> None:
        pass

    async def set_aside(self, elements: Sequence[Any]) -> None:
        pass


def service(store: Store, adapter: Flaky, start_ago: int = 300) -> SyncService:
    now = time.time()
    settings = SyncSettings(
        returns=False,
        start=datetime.fromtimestamp(now - start_ago, tz=UTC),
        poll_interval_s=30,
        safety_lag_s=0,
    )
    return SyncService(
        store=store,
        shops=[ShopHandle(SHOP, "app", {"orders": adapter})],  # type: ignore[dict-item]
        settings=settings,
        counters=RunCounters(),
    )


async def _row(store: Store) -> dict[str, Any]:
    (row,) = await store.sync_status([SHOP], ["orders"])
    return row


async def test_a_stream_failing_every_pass_backs_off_and_recovers(
    store: Store, pool: asyncpg.Pool
) -> None:
    adapter = Flaky(store)
    sync = service(store, adapter)
    for expected in (1, 2):  # the first failures are retried at the next passes
        result = await sync.incremental_pass()
        assert "ValueError" in result.failed[(SHOP, "orders")]
        row = await _row(store)
        assert (row["failures_in_row"], row["retry_after"]) == (expected, None)
    await sync.incremental_pass()
    row = await _row(store)
    assert row["failures_in_row"] == 3 and row["last_error_class"] == "ValueError"
    assert 50 < row["retry_after"].timestamp() - time.time() <= 60
    cell = _error_cell(row)
    assert cell.startswith("FAILING, backing off until ") and "(ValueError, 3 failed" in cell

    calls = adapter.fetches
    result = await sync.incremental_pass()
    assert adapter.fetches == calls, "a stream backing off sends no request"
    assert result.failed[(SHOP, "orders")].startswith("backing off until ")
    assert (await _row(store))["failures_in_row"] == 3, "a skipped pass is not another failure"

    # The wait is over (as if 60 s had passed) and Temu answers again: back to normal.
    await pool.execute("UPDATE sync_state SET retry_after = now() - interval '1 second'")
    adapter.broken = False
    result = await sync.incremental_pass()
    assert not result.failed and adapter.fetches > calls
    row = await _row(store)
    assert (row["failures_in_row"], row["retry_after"], row["failing"]) == (0, None, False)


async def test_another_error_class_starts_the_count_again(store: Store) -> None:
    for cls in ("ValueError", "ValueError", "TypeError"):
        await store.record_error(SHOP, "orders", "incremental", "boom", error_class=cls)
    assert (await _row(store))["failures_in_row"] == 1


async def test_inconsistent_windows_are_counted_per_stream(store: Store) -> None:
    await store.note_inconsistent(SHOP, "orders", "incremental")
    await store.note_inconsistent(SHOP, "orders", "incremental")
    assert (await _row(store))["inconsistent_windows"] == 2


async def test_a_postgres_failure_does_not_back_off(store: Store) -> None:
    """A lock or statement deadline passes: the daemon retries such a failure within seconds."""
    adapter = Flaky(store)
    adapter.error = asyncpg.exceptions.LockNotAvailableError("canceling statement: lock timeout")
    sync = service(store, adapter)
    for _ in range(4):
        await sync.incremental_pass()
    row = await _row(store)
    assert row["failures_in_row"] == 4 and row["retry_after"] is None
    assert row["last_error_class"] == "LockNotAvailableError"


class Liar(Flaky):
    """Every list answer claims one more record than it holds: never consistent."""

    async def fetch(
        self, page: int, window: Window, lane: Lane, created: Window | None = None
    ) -> Page:
        self.fetches += 1
        return Page(total=2, items=[{"sn": f"R{window.start}"}] if page == 1 else [])

    def key(self, item: dict[str, Any]) -> str | None:
        return str(item["sn"])


async def test_a_second_never_listed_consistently_is_counted_and_passed(store: Store) -> None:
    adapter = Liar(store)
    sync = service(store, adapter, start_ago=2)
    result = await sync.incremental_pass()
    assert not result.failed, "the stream goes on"
    row = await _row(store)
    assert row["inconsistent_windows"] >= 1 and row["position"] is not None
