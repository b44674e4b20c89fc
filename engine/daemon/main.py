"""`temu-sync run`: the long-running daemon.

One supervisor runs every loop: an incremental sync per shop and stream (drift-free tick),
the reconciler, a monitor (database probe, gauges, systemd STATUS) and the HTTP server. A loop
that fails is retried with backoff while the others go on; a broken shop slows down to one
try every few minutes instead of hammering Temu with a revoked token.

Lifecycle: open the database (retrying forever while Postgres refuses: under systemd that is
better than a restart loop), start everything, READY=1, run until SIGTERM/SIGINT, then
STOPPING=1, give in-flight work a short grace, cancel the rest (writes are transactional and
cursors only advance with committed rows, so a cancelled page is simply read again next
time), close the pool, the session and the embedded Postgres, exit 0. A second signal exits
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import asyncpg

from engine.app.reconciler import build_reconciler, label_submitter, reconciler_loop
from engine.app.runtime import RequestObserver, Runtime, open_runtime
from engine.cluster.keeper import ClusterTiming, Identity, LeaseKeeper, OwnedShopsStore
from engine.config import Settings
from engine.daemon.health import HealthBoard
from engine.daemon.http import build_app, start_http, stop_http
from engine.daemon.metrics import OUTBOX_STATES, Metrics
from engine.daemon.notify import Notifier, watchdog_interval, watchdog_pinger
from engine.daemon.supervisor import Backoff, Supervisor, sleep_or_stop, sleep_rest_of
from engine.logs import redact
from engine.store.leases import LeaseStore
from engine.sync.service import INCREMENTAL, ShopHandle, SyncService

__all__ = ["DaemonOptions", "run_daemon"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a lost or restarting database raises through asyncpg; a loop that sees one waits a
# little and tries again (the pool replaces broken connections on its own).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    ConnectionError,
    TimeoutError,
    OSError,
)
# At start-up the embedded Postgres may also fail to start (pg_ctl exits non-zero).
STARTUP_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, subprocess.SubprocessError)

EXIT_OK = 0


@dataclass(frozen=True)
class DaemonOptions:
    """Timings that are the daemon's business rather than the operator's (no config keys)."""

    # Shutdown, worst case about 9 s, inside the 10 s the interface promises (systemd's
    # TimeoutStopSec is 20): the grace lets a page being written commit and covers the
    # reconciler's own 5 s stop grace (engine/reconcile/wiring.py STOP_GRACE_S), after which
    # it cancels its pass itself; only then do we cancel what is left.
    grace_s: float = 6.0
    cancel_timeout_s: float = 1.0
    http_stop_timeout_s: float = 1.0
    close_timeout_s: float = 1.5
    # The monitor's round; also bounds how late /healthz notices a dead database.
    monitor_interval_s: float = 5.0
    probe_timeout_s: float = 3.0
    # COUNT(*) over the outbox grows with its history; a few times a minute is plenty.
    outbox_refresh_s: float = 30.0
    # A shop whose pass fails (revoked token, suspended app, Temu down) retries from the poll
    # interval up to this; other shops are unaffected.
    max_shop_backoff_s: float = 600.0
    startup_backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=60.0))
    health_slack_s: float = 30.0


def _describe(exc: BaseException) -> str:
    # Exception text from drivers can quote connection strings or request data: redact.
    text = str(exc).strip()
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


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
    ) -> None:
        self.name = f"sync:{shop_id}:{stream}"
        self._service = service
        self._shop = shop_id
        self._stream = stream
        self._interval = interval_s
        self._board = board
        self._metrics = metrics
        self._clock = clock
        # Temu-side failures (token, app, outage) are slow to fix: back off to minutes.
        self._temu_backoff = Backoff(base=interval_s, cap=max(interval_s, max_backoff_s))
        # The database usually comes back within seconds: never wait longer than a poll.
        self._db_backoff = Backoff(base=0.5, cap=max(1.0, interval_s))

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            started = self._clock()
            error, backoff = await self._one_pass()
            if error is None:
                if failures:
                    log.info("sync recovered after %d failed pass(es)", failures)
                failures = 0
                self._board.succeeded(self.name)
                delay_done = await sleep_rest_of(stop, self._interval, started, self._clock)
            else:
                failures += 1
                self._board.failed(self.name, error)
                self._metrics.loop_error(self.name)
                delay = backoff.delay(failures)
                log.warning(
                    "sync pass failed (%d in a row), next try in %.1f s: %s", failures, delay, error
                )
                delay_done = await sleep_or_stop(stop, delay)
            if delay_done:
                return

    async def _one_pass(self) -> tuple[str | None, Backoff]:
        try:
            result = await self._service.incremental_pass(
                shop_ids=[self._shop], streams=[self._stream]
            )
        except DATABASE_ERRORS as exc:
            return f"database: {_describe(exc)}", self._db_backoff
        message = result.failed.get((self._shop, self._stream))
        return (None if message is None else redact(message)), self._temu_backoff


class AppLoops:
    """The sync loops of each app's shops, started when this process takes the app's lease
    and stopped when it hands the app over or loses it (``engine/cluster.AppHooks``). Each
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
        supervisor: Supervisor,
        options: DaemonOptions,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rt = rt
        self._board = board
        self._metrics = metrics
        self._notifier = notifier
        self._supervisor = supervisor
        self._options = options
        self._interval = interval_s
        self._clock = clock
        self._positions: dict[tuple[str, str], datetime | None] = {}
        self._outbox: dict[str, Any] | None = None
        self._outbox_at: float | None = None
        # Loops whose liveness is all the monitor can see (the reconciler is a black box).
        self.watched: list[str] = []
        self.keeper: LeaseKeeper | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = self._clock()
            await self.round()
            if await sleep_rest_of(stop, self._interval, started, self._clock):
                return

    async def round(self) -> None:
        try:
            await asyncio.wait_for(self._refresh(), self._options.probe_timeout_s)
        except DATABASE_ERRORS as exc:
            message = _describe(exc)
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
        for name in self.watched:
            if self._supervisor.alive(name):
                self._board.progress(name)
        self._notifier.status(self.status_line())
        self._board.succeeded(self.NAME)

    def status_line(self) -> str:
        settings = self._rt.settings
        if self.keeper is None:
            return self._board.status_line(len(settings.shops), self._outbox)
        owned = set(self.keeper.owned)
        shops = sum(1 for s in settings.shops if s.app_key in owned)
        daemons = len(self.keeper.snapshot()["daemons"])
        return (
            self._board.status_line(shops, self._outbox)
            + f", apps {len(owned)}/{len(settings.apps)} owned, {daemons} daemon(s)"
        )

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


class Daemon:
    """Everything between "the database is open" and "the process may exit"."""

    def __init__(
        self,
        rt: Runtime,
        *,
        stop: asyncio.Event,
        metrics: Metrics,
        notifier: Notifier,
        options: DaemonOptions,
    ) -> None:
        self._rt = rt
        self._stop = stop
        self._metrics = metrics
        self._notifier = notifier
        self._options = options
        self.board = HealthBoard(slack_s=options.health_slack_s)
        self.supervisor = Supervisor(
            stop,
            restart=Backoff(base=1.0, cap=options.max_shop_backoff_s),
            on_crash=self._on_crash,
        )

    def _on_crash(self, name: str, exc: BaseException) -> None:
        self._metrics.loop_error(name)
        with contextlib.suppress(KeyError):  # tasks without a health entry (none today)
            self.board.failed(name, _describe(exc))

    def _start_loops(self) -> tuple[Monitor, AppLoops]:
        rt, settings = self._rt, self._rt.settings
        # The database answered: we just opened it and migrated.
        self.board.database_ok()
        interval = settings.sync.poll_interval_s
        # Sync loops start per app, when its lease is taken (serve()).
        apps = AppLoops(
            rt.sync_service(),
            board=self.board,
            metrics=self._metrics,
            options=self._options,
            interval_s=interval,
            on_crash=self._on_crash,
        )

        monitor_interval = min(self._options.monitor_interval_s, max(1.0, interval))
        monitor = Monitor(
            rt,
            board=self.board,
            metrics=self._metrics,
            notifier=self._notifier,
            supervisor=self.supervisor,
            options=self._options,
            interval_s=monitor_interval,
        )
        self.board.register(Monitor.NAME, monitor_interval, kind="monitor")
        self.supervisor.start(Monitor.NAME, monitor.run)
        return monitor, apps

    def _start_reconciler(self, monitor: Monitor, keeper: LeaseKeeper) -> None:
        rt, settings = self._rt, self._rt.settings
        if not settings.reconciler.enabled:
            return
        shops_of = {s.id: s.app_key for s in settings.shops}

        def owned_shops() -> list[str]:
            owned = set(keeper.owned)
            return [shop for shop, app in shops_of.items() if app in owned]

        # Claims limited to this process's apps: another daemon's tasks call Temu through
        # that daemon's pacer, never through ours.
        reconciler = build_reconciler(rt, claims=OwnedShopsStore(rt.pool, owned_shops))

        async def reconcile(stop: asyncio.Event) -> None:
            await reconciler_loop(rt, stop, reconciler=reconciler)

        self.board.register("reconciler", settings.reconciler.interval_s, kind="reconciler")
        monitor.watched.append("reconciler")
        self.supervisor.start("reconciler", reconcile)

    def _keeper(self, apps: AppLoops) -> LeaseKeeper:
        settings = self._rt.settings
        keeper = LeaseKeeper(
            LeaseStore(self._rt.pool),
            [a.app_key for a in settings.apps],
            Identity.of_this_process(settings.http.listen),
            timing=ClusterTiming(settings.cluster.lease_s),
            hooks=apps,
        )
        # Every Temu call of this process, whatever sends it (sync, reconciler, admin API),
        # passes its app's pacer: refused there unless this process holds the app's lease.
        for app_key, pacer in self._rt.pacers.items():
            pacer.gate = keeper.gate(app_key)
        self.board.add_info("cluster", keeper.snapshot)
        return keeper

    async def _start_http(self) -> Any:
        http = self._rt.settings.http
        if not http.listen:
            return None
        app = build_app(
            metrics=self._metrics,
            health=self.board,
            admin_token=http.admin_token,
            label_submitter=label_submitter(self._rt),
            max_body_bytes=http.max_body_bytes,
        )
        return await start_http(app, http.listen)

    async def serve(self) -> int:
        runner = await self._start_http()
        keeper: LeaseKeeper | None = None
        apps: AppLoops | None = None
        try:
            monitor, apps = self._start_loops()
            keeper = self._keeper(apps)
            # The first lease round runs now: a lone daemon owns every app before READY.
            await keeper.start()
            monitor.keeper = keeper
            self._start_reconciler(monitor, keeper)
            # STATUS right away (not only after the first monitor round), with READY.
            await monitor.round()
            self._notifier.ready(monitor.status_line())
            log.info(
                "daemon running: %d app(s) owned, %d loops",
                len(keeper.owned),
                len(self.supervisor.names) + len(self.board.names("sync")),
                extra={"listen": self._rt.settings.http.listen or "off", "owner": keeper.owner},
            )
            await self._stop.wait()
        finally:
            await self._shutdown(runner, keeper, apps)
        return EXIT_OK

    async def _shutdown(
        self, runner: Any, keeper: LeaseKeeper | None, apps: AppLoops | None
    ) -> None:
        began = time.monotonic()
        self.board.stopping()
        self._notifier.stopping("stopping: finishing in-flight work")
        log.info("stopping: waiting up to %.0f s for in-flight work", self._options.grace_s)
        # No new admin requests while the loops drain; both happen at the same time.
        http = asyncio.ensure_future(self._stop_http(runner))
        # The apps' loops drain under leases still being renewed, alongside everything else.
        stopping_apps = asyncio.ensure_future(
            keeper.stop_apps() if keeper is not None else asyncio.sleep(0)
        )
        cancelled = await self.supervisor.shutdown(
            grace_s=self._options.grace_s, cancel_timeout_s=self._options.cancel_timeout_s
        )
        await stopping_apps
        cancelled += apps.cancelled if apps is not None else []
        if cancelled:
            log.info(
                "cancelled unfinished work (rolled back, read again next start): %s",
                ", ".join(sorted(cancelled)),
            )
        if keeper is not None:
            # Released with a short cooldown, so the next owner's first request comes more
            # than a second after our last: the rate limit's window never holds both.
            await keeper.close(release_timeout_s=self._options.close_timeout_s)
        await http
        log.info("loops stopped in %.1f s", time.monotonic() - began)

    async def _stop_http(self, runner: Any) -> None:
        if runner is None:
            return
        try:
            await asyncio.wait_for(stop_http(runner), self._options.http_stop_timeout_s)
        except TimeoutError:
            log.warning("HTTP server did not stop within %.0f s", self._options.http_stop_timeout_s)


class _Signals:
    """First SIGTERM/SIGINT: stop cleanly. Second: exit at once (the operator insists)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stop: asyncio.Event,
        exit_now: Callable[[int], NoReturn] = os._exit,
    ) -> None:
        self._loop = loop
        self._stop = stop
        self._exit_now = exit_now
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._received, sig)
            self._installed.append(sig)

    def remove(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)
        self._installed.clear()

    def _received(self, sig: signal.Signals) -> None:
        if not self._stop.is_set():
            log.info("%s received: stopping (send it again to exit at once)", sig.name)
            self._stop.set()
            return
        log.warning("%s received again: exiting now", sig.name)
        logging.shutdown()
        self._exit_now(128 + int(sig))


async def _until_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """Runs ``work`` unless ``stop`` is set first (then cancels it and returns None): a
    connect that hangs on a black-holed host must not outlive a SIGTERM."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def open_with_retry(
    settings: Settings,
    *,
    stop: asyncio.Event,
    notifier: Notifier,
    observer: RequestObserver,
    backoff: Backoff,
    opener: Callable[..., Awaitable[Runtime]] = open_runtime,
) -> Runtime | None:
    """Opens the runtime, retrying forever while the database is unavailable; None when
    stopped first. Each wait asks systemd for more start time, so a slow Postgres does not
    turn into a start timeout and a restart loop."""
    failures = 0
    while not stop.is_set():
        try:
            return await _until_stopped(stop, opener(settings, observer=observer))
        except STARTUP_ERRORS as exc:
            failures += 1
            delay = backoff.delay(failures)
            message = _describe(exc)
            log.error(
                "cannot open the database (attempt %d): %s; retrying in %.0f s",
                failures,
                message,
                delay,
            )
            notifier.status(f"waiting for Postgres (attempt {failures}): {message}")
            notifier.extend_timeout(delay + 30.0)
            if await sleep_or_stop(stop, delay):
                break
    return None


async def run_daemon(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    options: DaemonOptions | None = None,
) -> int:
    """The `run` command without --once. Returns the exit code."""
    options = options or DaemonOptions()
    environ = os.environ if env is None else env
    stop = asyncio.Event()
    signals = _Signals(asyncio.get_running_loop(), stop)
    signals.install()
    notifier = Notifier.from_env(environ)
    # The watchdog proves the event loop is not blocked, including while waiting for Postgres.
    ping = watchdog_interval(environ)
    pinger = asyncio.create_task(watchdog_pinger(notifier, ping)) if ping else None
    metrics = Metrics()
    try:
        rt = await open_with_retry(
            settings,
            stop=stop,
            notifier=notifier,
            observer=metrics.observe_request,
            backoff=options.startup_backoff,
        )
        if rt is None:
            notifier.stopping("stopped before the database was available")
            log.info("stopped before the database was available")
            return EXIT_OK
        try:
            rt.counters.observer = metrics.add_rows
            rt.on_oc_token_refresh = metrics.oc_token_refreshed
            daemon = Daemon(rt, stop=stop, metrics=metrics, notifier=notifier, options=options)
            return await daemon.serve()
        finally:
            began = time.monotonic()
            await rt.close(pool_timeout_s=options.close_timeout_s)
            log.info("closed the database and sessions in %.1f s", time.monotonic() - began)
    finally:
        if pinger is not None:
            pinger.cancel()
        signals.remove()
