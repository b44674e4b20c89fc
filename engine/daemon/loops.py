"""The sync loops: one per shop and stream, an incremental pass every poll interval; grouped
per app so an app's loops start and stop with its lease."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

from engine.daemon.deadline import PassStalled, run_with_deadline
from engine.daemon.health import HealthBoard
from engine.daemon.metrics import Metrics
from engine.daemon.options import DaemonOptions
from engine.daemon.supervisor import Supervisor
from engine.errors import DATABASE_ERRORS, describe
from engine.logs import redact
from engine.retry import Backoff, sleep_or_stop, sleep_rest_of
from engine.sync.service import ShopHandle, SyncService

__all__ = ["AppLoops", "SyncLoop"]

log = logging.getLogger(__name__)


class SyncLoop:
    """One shop and stream: an incremental pass every poll interval, drift-free."""

    def __init__(
        self,
        service: SyncService,
        shop_id: str,
        stream: str,
        *,
        interval_s: float,
        board: HealthBoard,
        metrics: Metrics,
        max_backoff_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = f"sync:{shop_id}:{stream}"
        self._service = service
        self._shop = shop_id
        self._stream = stream
        self._interval = interval_s
        self._board = board
        self._metrics = metrics
        self._clock = clock
        self._wall = wall  # retry_after is wall-clock time (it is stored in Postgres)
        # Temu-side failures (token, app, outage) are slow to fix: back off to minutes.
        self._temu_backoff = Backoff(base=interval_s, cap=max(interval_s, max_backoff_s))
        # The database usually comes back within seconds: never wait longer than a poll.
        self._db_backoff = Backoff(base=0.5, cap=max(1.0, interval_s))

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            started = self._clock()
            error, backoff, held_until = await self._one_pass()
            if error is None:
                if failures:
                    log.info("sync recovered after %d failed pass(es)", failures)
                failures = 0
                self._board.succeeded(self.name)
                delay_done = await sleep_rest_of(stop, self._interval, started, self._clock)
            elif held_until is not None:
                # Skipped: the stream's persisted backoff holds (it failed pass after pass).
                # Still failing on the board; the next try is when that backoff ends, not
                # later on a second, in-memory schedule (nor is the skip another failure).
                self._board.failed(self.name, error, since=started)
                delay = max(self._interval, held_until.timestamp() - self._wall())
                delay_done = await sleep_or_stop(stop, delay)
            else:
                failures += 1
                # Failing since the failed pass began: a write that waited out its lock
                # deadline was unable to write for all that time.
                self._board.failed(self.name, error, since=started)
                self._metrics.loop_error(self.name)
                delay = backoff.delay(failures)
                log.warning(
                    "sync pass failed (%d in a row), next try in %.1f s: %s", failures, delay, error
                )
                delay_done = await sleep_or_stop(stop, delay)
            if delay_done:
                return

    async def _one_pass(self) -> tuple[str | None, Backoff, datetime | None]:
        try:
            result = await run_with_deadline(
                self._service.incremental_pass(shop_ids=[self._shop], streams=[self._stream]),
                idle_s=lambda: self._board.idle_s(self.name),
                limit_s=self._board.stale_after_s(self.name),
            )
        except PassStalled as exc:
            return str(exc), self._db_backoff, None
        except DATABASE_ERRORS as exc:
            return f"database: {describe(exc)}", self._db_backoff, None
        key = (self._shop, self._stream)
        message = result.failed.get(key)
        backoff = self._db_backoff if key in result.database_failed else self._temu_backoff
        error = None if message is None else redact(message)
        return error, backoff, result.held_until.get(key)


class AppLoops:
    """The sync loops of each app's shops, started when this process takes the app's lease
    and stopped when it hands the app over or loses it (``engine.cluster.keeper.AppHooks``). Each
    app has its own supervisor, so one app stops without touching the others."""

    def __init__(
        self,
        service: SyncService,
        *,
        board: HealthBoard,
        metrics: Metrics,
        options: DaemonOptions,
        interval_s: float,
        on_crash: Callable[[str, BaseException], None],
    ) -> None:
        self._service = service
        self._interval = interval_s
        self._board = board
        self._metrics = metrics
        self._options = options
        self._on_crash = on_crash
        self._groups: dict[str, Supervisor] = {}
        self.cancelled: list[str] = []

    def shops(self, app_key: str) -> list[ShopHandle]:
        return [s for s in self._service.shops if s.app_key == app_key]

    async def start_app(self, app_key: str) -> None:
        if app_key in self._groups:
            return
        supervisor = Supervisor(
            asyncio.Event(),
            restart=Backoff(base=1.0, cap=self._options.max_shop_backoff_s),
            on_crash=self._on_crash,
        )
        self._groups[app_key] = supervisor
        interval = self._interval
        for shop in self.shops(app_key):
            for stream in self._service.enabled_streams():
                if stream not in shop.adapters:
                    log.warning("stream %s is not available in this build", stream)
                    continue
                loop = SyncLoop(
                    self._service,
                    shop.shop_id,
                    stream,
                    interval_s=interval,
                    board=self._board,
                    metrics=self._metrics,
                    max_backoff_s=self._options.max_shop_backoff_s,
                )
                self._board.register(
                    loop.name, interval, kind="sync", shop=shop.shop_id, stream=stream
                )
                supervisor.start(loop.name, loop.run, shop=shop.shop_id, stream=stream)

    async def stop_app(self, app_key: str, *, graceful: bool) -> None:
        supervisor = self._groups.pop(app_key, None)
        if supervisor is None:
            return
        # A lost lease stops at once: another process may take the app soon, and a request
        # sent from here after that would count against the same limit.
        cancelled = await supervisor.shutdown(
            grace_s=self._options.grace_s if graceful else 0.0,
            cancel_timeout_s=self._options.cancel_timeout_s,
        )
        self.cancelled += cancelled
        for name in supervisor.names:
            self._board.unregister(name)
