"""Incremental passes and backfills over every (shop, stream) pair.

Each pair walks its own range; pairs run concurrently and share their app's limiter, so a shop
with a long history does not hold up the others. A failure that belongs to one shop (revoked
token) or one app (bad secret) stops only the pairs it concerns; the rest complete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from engine.config import SyncSettings
from engine.counters import RunCounters
from engine.errors import describe
from engine.logs import log_context
from engine.retry import failing_stream_delay
from engine.store.store import CursorAdvance, Store
from engine.sync.failures import database_lost
from engine.sync.pager import StreamAdapter
from engine.sync.tokens import MissingScopes, TokenGate
from engine.sync.walker import WalkResult, to_datetime, walk_range
from engine.sync.windows import SpanPlanner, Window
from engine.temu.errors import AppNotOwned, TemuError
from engine.temu.limiter import Lane

log = logging.getLogger(__name__)

STREAMS = ("orders", "returns")
INCREMENTAL = "incremental"


@dataclass(frozen=True)
class ShopHandle:
    shop_id: str
    app_key: str
    adapters: dict[str, StreamAdapter]  # stream name -> adapter


@dataclass
class PassResult:
    walked: dict[tuple[str, str], WalkResult] = field(default_factory=dict)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    # The failed pairs whose cause was Postgres (a lock or statement deadline, say) rather than
    # Temu: the daemon retries those within seconds, not after a Temu-sized backoff.
    database_failed: set[tuple[str, str]] = field(default_factory=set)
    # Failed pairs skipped because their persisted backoff holds (sync_state.retry_after):
    # the daemon waits until then, on that one schedule, not on a second one of its own.
    held_until: dict[tuple[str, str], datetime] = field(default_factory=dict)

    @property
    def shops_failed(self) -> set[str]:
        return {shop for shop, _ in self.failed}


ProgressFn = Callable[[str, str, Window, int], None]


def backfill_kind(since: int, until: int | None) -> str:
    return f"backfill:{since}:{until}" if until is not None else f"backfill:{since}"


class SyncService:
    def __init__(
        self,
        *,
        store: Store,
        shops: Sequence[ShopHandle],
        settings: SyncSettings,
        counters: RunCounters,
        clock: Callable[[], float] = time.time,
        tokens: TokenGate | None = None,
        backoff: Callable[[int], float] | None = None,
    ) -> None:
        self._store = store
        # A stream failing incremental pass after pass is skipped for this long (sync_state).
        self._backoff = backoff or failing_stream_delay(settings.poll_interval_s)
        self._tokens = tokens
        self._shops = list(shops)
        self._settings = settings
        self._counters = counters
        self._clock = clock

    @property
    def shops(self) -> list[ShopHandle]:
        return list(self._shops)

    def enabled_streams(self) -> list[str]:
        return self._settings.streams

    def _planner(self, adapter: StreamAdapter) -> SpanPlanner:
        # About 100 pages per window: the partial last page then wastes ~0.5% of the budget.
        target = adapter.page_size * 100
        return SpanPlanner(
            span=self._settings.backfill_window_s, target_items=target, max_items=target * 2
        )

    def _select(
        self, shop_ids: Sequence[str] | None, streams: Sequence[str] | None
    ) -> list[tuple[ShopHandle, str]]:
        wanted = list(streams) if streams else self.enabled_streams()
        pairs = []
        for shop in self._shops:
            if shop_ids and shop.shop_id not in shop_ids:
                continue
            for stream in wanted:
                if stream in shop.adapters:
                    pairs.append((shop, stream))
        return pairs

    async def _usable(
        self, pairs: list[tuple[ShopHandle, str]], kind: str, result: PassResult
    ) -> list[tuple[ShopHandle, str]]:
        """The pairs whose shop's token is good for this pass (interface.md, "Access tokens":
        a shop missing a scope fails with the missing API types, before any other call)."""
        if self._tokens is None:
            return pairs
        bad: dict[str, str] = {}
        handed_over: set[str] = set()
        for shop_id in dict.fromkeys(shop.shop_id for shop, _ in pairs):
            try:
                await self._tokens.require(shop_id)
            except AppNotOwned:
                handed_over.add(shop_id)  # another daemon took the app: not our failure
            except (MissingScopes, TemuError) as exc:
                bad[shop_id] = str(exc)
                with log_context(shop=shop_id):
                    log.error("access token check failed: %s", exc)
        for shop, stream in pairs:
            if shop.shop_id in bad:
                result.failed[(shop.shop_id, stream)] = bad[shop.shop_id]
                self._counters.shops_failed.add(shop.shop_id)
                # No backing off: the token check is its own (cached) call, and a renewed
                # token should work at the next pass.
                await self._store.record_error(
                    shop.shop_id, stream, kind, bad[shop.shop_id], error_class="TokenCheck"
                )
        return [
            (shop, stream)
            for shop, stream in pairs
            if shop.shop_id not in bad and shop.shop_id not in handed_over
        ]

    async def _run_pair(
        self,
        shop: ShopHandle,
        stream: str,
        kind: str,
        start: int,
        end: int,
        lane: Lane,
        result: PassResult,
        progress: ProgressFn | None,
    ) -> None:
        adapter = shop.adapters[stream]
        with log_context(shop=shop.shop_id, stream=stream):
            if start > end:
                await self._store.record_success(shop.shop_id, stream, kind)
                return
            began = datetime.now(UTC)
            try:
                walked = await walk_range(
                    adapter,
                    kind=kind,
                    start=start,
                    end=end,
                    lane=lane,
                    planner=self._planner(adapter),
                    progress=(lambda w, n: progress(shop.shop_id, stream, w, n))
                    if progress
                    else None,
                    on_inconsistent=lambda _w: self._store.note_inconsistent(
                        shop.shop_id, stream, kind
                    ),
                )
                await adapter.after_walk(lane, began)
            except AppNotOwned:
                # Another daemon took the app's lease while a call waited in the pacer: the
                # pass ends here for this stream, quietly (the new owner syncs it; the cursor
                # only holds what was committed). Not a shop failure.
                log.info("sync pass ended: the app is now held by another daemon")
                return
            except Exception as exc:
                # Whatever one stream raises stays that stream's failure: recorded, named in
                # shops_failed, the other pairs go on. Only a lost database ends the pass.
                if database_lost(exc):
                    raise
                message = str(exc) if isinstance(exc, TemuError) else describe(exc)
                log.error("sync failed: %s", message, exc_info=not isinstance(exc, TemuError))
                result.failed[(shop.shop_id, stream)] = message
                if isinstance(exc, asyncpg.PostgresError):
                    result.database_failed.add((shop.shop_id, stream))
                self._counters.shops_failed.add(shop.shop_id)
                # Only the unattended incremental passes back off (a backfill is run by hand),
                # and not for Postgres (a lock or a deadline passes; retried within seconds).
                backs_off = kind == INCREMENTAL and not isinstance(exc, asyncpg.PostgresError)
                await self._store.record_error(
                    shop.shop_id,
                    stream,
                    kind,
                    message,
                    error_class=type(exc).__name__,
                    backoff=self._backoff if backs_off else None,
                )
                return
            result.walked[(shop.shop_id, stream)] = walked
            self._counters.drift_events += walked.drift_events
            await self._store.record_success(shop.shop_id, stream, kind)

    async def incremental_pass(
        self,
        shop_ids: Sequence[str] | None = None,
        streams: Sequence[str] | None = None,
        *,
        respect_backoff: bool = True,
    ) -> PassResult:
        """One incremental pass: from each cursor (minus the overlap) to now minus the lag.

        ``respect_backoff=False`` (one-shot commands): a stream the daemon is backing off from
        is tried anyway. Someone who fixed a fault and runs the command expects it to try; a
        failure is still recorded and still extends the daemon's backoff."""
        result = PassResult()
        now = int(self._clock())
        end = now - self._settings.safety_lag_s
        first_start = int(self._settings.start.timestamp())
        jobs = []
        pairs = await self._usable(self._select(shop_ids, streams), INCREMENTAL, result)
        for shop, stream in pairs:
            if respect_backoff and await self._backing_off(shop.shop_id, stream, result):
                continue
            cursor = await self._store.get_cursor(shop.shop_id, stream, INCREMENTAL)
            if cursor is None:
                start = first_start
            else:
                start = max(first_start, int(cursor.timestamp()) + 1 - self._settings.overlap_s)
            jobs.append(
                self._run_pair(
                    shop, stream, INCREMENTAL, start, end, Lane.INCREMENTAL, result, None
                )
            )
        await asyncio.gather(*jobs)
        return result

    async def _backing_off(self, shop_id: str, stream: str, result: PassResult) -> bool:
        """A stream that failed pass after pass waits until its retry_after: no Temu call. It
        still counts as failed (its data is not current), with the reason."""
        held = await self._store.backing_off(shop_id, stream, INCREMENTAL)
        if held is None:
            return False
        until = held["retry_after"].isoformat(timespec="seconds")
        message = (
            f"backing off until {until} after {held['failures_in_row']} failed passes in a row "
            f"({held['last_error_class']}): {held['last_error']}"
        )
        with log_context(shop=shop_id, stream=stream):
            log.warning("sync skipped: %s", message)
        result.failed[(shop_id, stream)] = message
        result.held_until[(shop_id, stream)] = held["retry_after"]
        self._counters.shops_failed.add(shop_id)
        return True

    async def _hand_over_to_incremental(
        self, shop_id: str, stream: str, since: int, end: int
    ) -> None:
        """A backfill up to now that starts no later than the incremental start covers what
        the first incremental pass would read: let that pass begin where the backfill ended."""
        if since > int(self._settings.start.timestamp()):
            return
        if await self._store.get_cursor(shop_id, stream, INCREMENTAL) is None:
            await self._store.advance_cursor(
                shop_id, CursorAdvance(stream=stream, kind=INCREMENTAL, position=to_datetime(end))
            )

    async def backfill(
        self,
        since: datetime,
        until: datetime | None,
        *,
        shop_ids: Sequence[str] | None = None,
        streams: Sequence[str] | None = None,
        progress: ProgressFn | None = None,
    ) -> PassResult:
        """History in ``[since, until]``; resumes where an interrupted identical run stopped."""
        result = PassResult()
        since_ts = int(since.timestamp())
        until_ts = int(until.timestamp()) if until is not None else None
        kind = backfill_kind(since_ts, until_ts)
        # Temu may still add records to a window that ends less than safety_lag_s ago: a backfill
        # never commits its cursor past that point, whatever --until says; a later run of the
        # same backfill resumes there.
        safe_end = int(self._clock()) - self._settings.safety_lag_s
        end = safe_end if until_ts is None else min(until_ts, safe_end)
        jobs = []
        for shop, stream in await self._usable(self._select(shop_ids, streams), kind, result):
            cursor = await self._store.get_cursor(shop.shop_id, stream, kind)
            start = since_ts if cursor is None else int(cursor.timestamp()) + 1
            jobs.append(
                self._run_pair(shop, stream, kind, start, end, Lane.BACKFILL, result, progress)
            )
        await asyncio.gather(*jobs)
        if until_ts is None:
            for shop_id, stream in result.walked:
                await self._hand_over_to_incremental(shop_id, stream, since_ts, end)
        return result
