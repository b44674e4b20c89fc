"""The daemon's monitor: database probe, gauges from Postgres and the pacers, progress of
long first syncs, and systemd's STATUS line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from engine.app.runtime import Runtime
from engine.cluster.keeper import LeaseKeeper
from engine.daemon.health import HealthBoard
from engine.daemon.metrics import OUTBOX_STATES, Metrics
from engine.daemon.notify import Notifier
from engine.daemon.options import DaemonOptions
from engine.errors import DATABASE_ERRORS, describe
from engine.retry import sleep_rest_of
from engine.sync.service import INCREMENTAL
from engine.waits import within

__all__ = ["Monitor"]

log = logging.getLogger(__name__)


class Monitor:
    """Probes the database, refreshes the gauges that come from Postgres and the pacers, counts
    a moving cursor as progress (a long first sync is busy, not stuck) and updates STATUS."""

    NAME = "monitor"

    def __init__(
        self,
        rt: Runtime,
        *,
        board: HealthBoard,
        metrics: Metrics,
        notifier: Notifier,
        options: DaemonOptions,
        interval_s: float,
        keeper: LeaseKeeper | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rt = rt
        self._board = board
        self._metrics = metrics
        self._notifier = notifier
        self._options = options
        self._interval = interval_s
        self._clock = clock
        self._positions: dict[tuple[str, str], datetime | None] = {}
        self._outbox: dict[str, Any] | None = None
        self._outbox_at: float | None = None
        self._keeper = keeper
        self._abandoned: asyncio.Future[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = self._clock()
            await self.round()
            if await sleep_rest_of(stop, self._interval, started, self._clock):
                return

    async def round(self) -> None:
        try:
            await self._probe()
        except DATABASE_ERRORS as exc:
            message = describe(exc)
            if self._board.database_up:
                log.error("database unavailable: %s", message)
            self._board.database_down(message)
            self._metrics.loop_error(self.NAME)
        else:
            if not self._board.database_up:
                log.info("database is back")
            self._board.database_ok()
        for app_key, pacer in self._rt.pacers.items():
            self._metrics.set_pace(app_key, pacer.pace)
        self._notifier.status(self.status_line())
        self._board.succeeded(self.NAME)

    def status_line(self) -> str:
        settings = self._rt.settings
        if self._keeper is None:
            return self._board.status_line(len(settings.shops), self._outbox)
        owned = set(self._keeper.owned)
        shops = sum(1 for s in settings.shops if s.app_key in owned)
        daemons = len(self._keeper.snapshot()["daemons"])
        return (
            self._board.status_line(shops, self._outbox)
            + f", apps {len(owned)}/{len(settings.apps)} owned, {daemons} daemon(s)"
        )

    async def _probe(self) -> None:
        """The refresh within the probe timeout, kept even against a silent Postgres (see
        engine/waits.py); while an abandoned probe is still cancelling, no second one starts
        (each would hold a pooled connection for as long)."""
        if self._abandoned is not None and not self._abandoned.done():
            raise TimeoutError("the previous probe is still unanswered")
        refresh = asyncio.ensure_future(self._refresh())
        try:
            await within(refresh, self._options.probe_timeout_s)
        except TimeoutError:
            self._abandoned = refresh
            raise

    async def _refresh(self) -> None:
        rows = await self._rt.store.sync_status()
        for row in rows:
            if row["kind"] == INCREMENTAL:
                self._stream_row(row)
        now = self._clock()
        if self._outbox_at is None or now - self._outbox_at >= self._options.outbox_refresh_s:
            summary = await self._rt.store.outbox_summary()
            self._outbox = summary
            self._outbox_at = now
            self._metrics.set_outbox({s: int(summary.get(s) or 0) for s in OUTBOX_STATES})
        # Every round: a small table (one row per set-aside record), grouped by its key. Each
        # configured shop and stream reads 0 rather than being absent until its first record.
        rejected = await self._rt.store.rejected_counts()
        counts = dict.fromkeys(self._configured_streams(), 0)
        counts.update({(r["shop_id"], r["stream"]): int(r["records"]) for r in rejected})
        self._metrics.set_rejected(counts)

    def _configured_streams(self) -> list[tuple[str, str]]:
        streams = self._rt.settings.sync.streams
        return [(shop.id, stream) for shop in self._rt.settings.shops for stream in streams]

    def _stream_row(self, row: Mapping[str, Any]) -> None:
        shop, stream, position = row["shop_id"], row["stream"], row["position"]
        key = (shop, stream)
        name = f"sync:{shop}:{stream}"
        if key in self._positions and position != self._positions[key]:
            # KeyError: a stream this daemon does not run (removed from the config).
            with contextlib.suppress(KeyError):
                self._board.progress(name)
        self._positions[key] = position
        if row.get("lag_s") is not None:
            self._metrics.set_cursor_lag(shop, stream, float(row["lag_s"]))
        success = row.get("last_success_at")
        if success is not None:
            self._metrics.mark_success(shop, stream, success.timestamp())
        retry_after = row.get("retry_after")
        self._metrics.set_stream_health(
            shop,
            stream,
            failures_in_row=int(row.get("failures_in_row") or 0),
            backoff_until=None if retry_after is None else retry_after.timestamp(),
            inconsistent_windows=int(row.get("inconsistent_windows") or 0),
        )
