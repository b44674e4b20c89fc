"""The daemon's sync loop and the stream's persisted backoff: while sync_state.retry_after
holds, the loop waits for exactly that (one schedule, the documented one), and a skipped pass
is not counted as another failure."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from engine.daemon.health import HealthBoard
from engine.daemon.loops import SyncLoop
from engine.daemon.metrics import Metrics
from engine.sync.service import PassResult

KEY = ("shop-1", "orders")


class HeldService:
    """Every pass is skipped: the stream backs off until ``until`` (wall clock)."""

    def __init__(self, hold_s: float) -> None:
        self.until = datetime.fromtimestamp(time.time() + hold_s, UTC)
        self.calls: list[float] = []

    async def incremental_pass(self, **_: Any) -> PassResult:
        self.calls.append(time.monotonic())
        result = PassResult()
        result.failed[KEY] = f"backing off until {self.until.isoformat()}"
        result.held_until[KEY] = self.until
        return result


async def test_a_held_stream_is_tried_when_its_backoff_ends_not_on_a_second_schedule() -> None:
    service = HeldService(hold_s=0.4)
    board = HealthBoard()
    metrics = Metrics()
    loop = SyncLoop(
        service,  # type: ignore[arg-type]
        *KEY,
        interval_s=0.02,  # the in-memory backoff would retry after 0.02, 0.04, 0.08 ... s
        board=board,
        metrics=metrics,
        max_backoff_s=60,
    )
    board.register(loop.name, 0.02, kind="sync")
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await asyncio.sleep(0.6)
    stop.set()
    await asyncio.wait_for(task, 5)
    first, *rest = service.calls
    # The first pass found the hold; the next came when it ended (0.4 s), not before.
    assert rest and rest[0] - first >= 0.35, [round(c - first, 3) for c in service.calls]
    assert board.loop(loop.name).failures >= 1  # still failing on the board: data not current
    # A skip is not another failed pass: the loop error counter did not move.
    assert not metrics.registry.get_sample_value("temu_sync_loop_errors_total", {"loop": loop.name})
