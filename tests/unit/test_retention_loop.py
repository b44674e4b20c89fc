"""The daemon's retention schedule: runs on its interval, survives a failing run, reports."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from engine.daemon.health import HealthBoard
from engine.daemon.retention_loop import NAME, RetentionLoop, RetentionMetrics
from engine.store.retention import PruneReport


class FakePruner:
    def __init__(self, fail_first: int) -> None:
        self.calls = 0
        self.fail_first = fail_first

    async def prune(self, *, dry_run: bool = False) -> PruneReport:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise ConnectionError("database went away")
        return PruneReport(
            dry_run=dry_run,
            removed={"changes": 1000, "outbox_done": 3},
            dropped_partitions=["changes_p0000000000000000001"],
        )


async def test_a_failed_run_is_logged_and_the_next_one_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    metrics = RetentionMetrics(registry)
    pruner = FakePruner(fail_first=1)
    loop = RetentionLoop(pruner, interval_s=0.01, observe=metrics.observe, wall_clock=lambda: 1e9)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="engine.daemon.retention_loop")
    task = asyncio.create_task(loop.run(stop))
    for _ in range(200):
        if pruner.calls >= 3:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 1.0)
    assert pruner.calls >= 3
    assert "retention run failed: ConnectionError: database went away" in caplog.text
    assert "retention removed 1000 changes, 3 outbox_done (1 changes partitions dropped)" in (
        caplog.text
    )
    text = generate_latest(registry).decode()
    runs = pruner.calls - 1
    assert f'temu_sync_retention_removed_rows_total{{table="changes"}} {1000.0 * runs}' in text
    assert 'temu_sync_retention_removed_rows_total{table="outbox_dead"} 0.0' in text
    assert "temu_sync_retention_last_run_timestamp_seconds 1e+09" in text


async def test_stop_ends_the_wait_at_once() -> None:
    loop = RetentionLoop(FakePruner(0), interval_s=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 0.5)


async def test_runs_failing_one_after_another_show_in_health_by_name() -> None:
    board = HealthBoard(slack_s=60, failing_grace_s=0.0)
    board.register(NAME, 0.01, kind="retention")
    pruner = FakePruner(fail_first=3)
    loop = RetentionLoop(pruner, interval_s=0.01, board=board)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    seen_unhealthy = ""
    async with asyncio.timeout(5):
        while pruner.calls < 4:
            ok, details = board.health()
            if not ok:
                seen_unhealthy = details["reason"]
            await asyncio.sleep(0.001)
        while not board.health()[0]:  # noqa: ASYNC110 - polling the board the loop writes
            await asyncio.sleep(0.001)
    stop.set()
    await task
    assert seen_unhealthy.startswith("retention:"), seen_unhealthy
    assert "database went away" in seen_unhealthy
