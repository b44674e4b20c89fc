"""The daemon's retention schedule: prune every ``retention.interval_s``, log what went, count
it in ``/metrics``. (Belongs with the daemon's loops: ``engine/daemon/`` after the move.)"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from engine.daemon.health import HealthBoard
from engine.errors import describe
from engine.retry import sleep_rest_of
from engine.store.retention import PruneReport

log = logging.getLogger(__name__)

NAME = "retention"  # the loop's name on the health board

RETENTION_TABLES = ("changes", "outbox_done", "outbox_dead", "rejected_records", "webhook_events")


class RetentionMetrics:
    """Registers its series on the daemon's registry (``Metrics.registry``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._removed = Counter(
            "temu_sync_retention_removed_rows_total",
            "Rows removed by retention, by table (outbox split into done and dead tasks).",
            ["table"],
            registry=registry,
        )
        self._dropped = Counter(
            "temu_sync_retention_dropped_partitions_total",
            "Partitions of changes dropped by retention.",
            registry=registry,
        )
        self._last_run = Gauge(
            "temu_sync_retention_last_run_timestamp_seconds",
            "Unix time of the last completed retention run.",
            registry=registry,
        )
        self._duration = Gauge(
            "temu_sync_retention_last_run_seconds",
            "How long the last retention run took.",
            registry=registry,
        )
        for t in RETENTION_TABLES:
            self._removed.labels(table=t).inc(0)

    def observe(self, report: PruneReport, at: float) -> None:
        for table, n in report.removed.items():
            self._removed.labels(table=table).inc(max(0, n))
        self._dropped.inc(len(report.dropped_partitions))
        self._last_run.set(at)
        self._duration.set(report.elapsed_s)


class Prunes(Protocol):
    async def prune(self, *, dry_run: bool = False) -> PruneReport: ...


class RetentionLoop:
    def __init__(
        self,
        pruner: Prunes,
        *,
        interval_s: float,
        observe: Callable[[PruneReport, float], None] | None = None,
        board: HealthBoard | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._pruner = pruner
        self._board = board
        self._interval = interval_s
        self._observe = observe
        self._wall = wall_clock

    async def run_once(self) -> PruneReport:
        report = await self._pruner.prune()
        quiet = not (report.total or report.conversion or report.busy)
        log.log(logging.DEBUG if quiet else logging.INFO, "%s", report.summary())
        if self._observe is not None:
            self._observe(report, self._wall())
        return report

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a run, then the rest of the interval. A failed run is logged and
        tried again next time: retention must never take the daemon down."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.run_once()
            except Exception as exc:  # logged; tried again at the next tick
                log.warning("retention run failed: %s", describe(exc))
                if self._board is not None:
                    self._board.failed(NAME, describe(exc), since=started)
            else:
                if self._board is not None:
                    self._board.succeeded(NAME)
            if await sleep_rest_of(stop, self._interval, started):
                return
