"""The webhook consumer reports every pass to the daemon's health board, as the reconciler
does: passes that fail make /healthz name ``webhooks``; a pass that hangs is cancelled at its
deadline and reported; the check turns ok again by itself once passes succeed. Without it,
events piling up behind a broken consumer showed only in the log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import asyncpg

from engine.daemon.health import HealthBoard
from engine.daemon.webhook_service import NAME, BoardWatch
from engine.store.events import EventStore, StoredEvent
from engine.sync.events import ConsumerSettings, EventConsumer


class ScriptedEvents(EventStore):
    """An event store whose claim does what the test says: fail, hang, or find nothing."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.mode = "fail"

    async def claim(
        self, *, limit: int, lease_s: float, shop_ids: Sequence[str] | None = None
    ) -> list[StoredEvent]:
        if self.mode == "fail":
            raise asyncpg.exceptions.InsufficientPrivilegeError(
                "permission denied for table webhook_events"
            )
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return await super().claim(limit=limit, lease_s=lease_s, shop_ids=shop_ids)


async def _until(check: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling a board the loop writes to
            await asyncio.sleep(0.02)


async def test_failing_and_hung_consumer_passes_show_in_health_by_name(
    pool: asyncpg.Pool,
) -> None:
    board = HealthBoard(slack_s=0.5, failing_grace_s=0.3)
    board.register(NAME, 0.05, kind="webhooks")
    events = ScriptedEvents(pool)
    consumer = EventConsumer(
        events=events,
        shops=[],
        settings=ConsumerSettings(poll_s=0.05, settle_s=0.0),
        shop_ids=["shop-1"],
        watch=BoardWatch(board),
    )
    stop = asyncio.Event()
    loop = asyncio.create_task(consumer.run(stop))
    try:
        await _until(lambda: not board.health()[0])
        details = board.health()[1]
        assert "webhooks" in details["reason"] and "permission denied" in details["reason"]
        assert details["loops"][NAME]["failures"] >= 2

        events.mode = "ok"  # the real claim: nothing due
        await _until(lambda: board.health()[0])
        assert board.loop(NAME).failures == 0

        events.mode = "hang"
        await _until(lambda: board.loop(NAME).failures > 0, within=15)
        assert "no progress" in (board.loop(NAME).last_error or "")
        events.mode = "ok"
        await _until(lambda: board.health()[0])
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await loop
