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
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn, TypeVar

from engine.app.reconciler import ScreenedShops, build_reconciler, label_submitter, oc_client
from engine.app.runtime import Observers, Runtime, open_runtime
from engine.cluster.claims import OwnedShopsStore
from engine.cluster.holdings import ClusterTiming, Holdings
from engine.cluster.identity import Identity
from engine.cluster.keeper import LeaseKeeper
from engine.config import Settings
from engine.daemon.health import HealthBoard
from engine.daemon.http import build_app, start_http, stop_http
from engine.daemon.loops import AppLoops
from engine.daemon.metrics import Metrics
from engine.daemon.monitor import Monitor
from engine.daemon.notify import Notifier, watchdog_interval, watchdog_pinger
from engine.daemon.options import DaemonOptions
from engine.daemon.reconciler_loop import NAME as RECONCILER
from engine.daemon.reconciler_loop import reconciler_loop
from engine.daemon.retention_loop import NAME as RETENTION
from engine.daemon.retention_loop import RetentionLoop, RetentionMetrics
from engine.daemon.supervisor import Supervisor
from engine.daemon.webhook_service import start_webhooks
from engine.errors import STARTUP_ERRORS, ExitCode, describe
from engine.reconcile.ports import LabelSubmitter
from engine.retry import Backoff, sleep_or_stop
from engine.store.leases import LeaseStore
from engine.store.retention import Pruner, policy_for

__all__ = ["DaemonOptions", "run_daemon"]

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        identity: Identity,
        holdings: Holdings,
        board: HealthBoard,
        http_runner: Any = None,
    ) -> None:
        self._rt = rt
        self._runner = http_runner
        self._stop = stop
        self._metrics = metrics
        self._notifier = notifier
        self._options = options
        self._identity = identity
        self._holdings = holdings
        self.board = board
        self.supervisor = Supervisor(
            stop,
            restart=Backoff(base=1.0, cap=options.max_shop_backoff_s),
            on_crash=self._on_crash,
        )

    def _on_crash(self, name: str, exc: BaseException) -> None:
        self._metrics.loop_error(name)
        with contextlib.suppress(KeyError):  # tasks without a health entry (none today)
            self.board.failed(name, describe(exc))

    def _app_loops(self) -> AppLoops:
        # Sync loops start per app, when its lease is taken (the keeper's hooks).
        return AppLoops(
            self._rt.sync_service(),
            board=self.board,
            metrics=self._metrics,
            options=self._options,
            interval_s=self._rt.settings.sync.poll_interval_s,
            on_crash=self._on_crash,
        )

    def _keeper(self, apps: AppLoops) -> LeaseKeeper:
        settings = self._rt.settings
        # The runtime's pacers were built with self._holdings' gates: every Temu call of this
        # process (sync, reconciler, admin API) is refused unless the keeper holds its app.
        keeper = LeaseKeeper(
            LeaseStore(self._rt.pool),
            [a.app_key for a in settings.apps],
            self._identity,
            timing=self._holdings.timing,
            hooks=apps,
            holdings=self._holdings,
        )
        self.board.add_info("cluster", keeper.snapshot)
        return keeper

    def _start_monitor(self, keeper: LeaseKeeper) -> Monitor:
        settings = self._rt.settings
        # The database answered: we just opened it and migrated.
        self.board.database_ok()
        interval = min(self._options.monitor_interval_s, max(1.0, settings.sync.poll_interval_s))
        monitor = Monitor(
            self._rt,
            board=self.board,
            metrics=self._metrics,
            notifier=self._notifier,
            options=self._options,
            interval_s=interval,
            keeper=keeper,
        )
        self._metrics.export_decodes(lambda: self._rt.stats.tolerant_decodes)
        self.board.register(Monitor.NAME, interval, kind="monitor")
        self.supervisor.start(Monitor.NAME, monitor.run)
        return monitor

    def _start_reconciler(self, keeper: LeaseKeeper) -> None:
        rt, settings = self._rt, self._rt.settings
        if not settings.reconciler.enabled:
            return
        # Claims limited to this process's apps: another daemon's tasks call Temu through
        # that daemon's pacer, never through ours.
        oc = oc_client(rt)
        if oc is not None:
            self._metrics.export_oc(
                lambda: {"calls": oc.calls, "retries": oc.retries, "auth_retries": oc.auth_retries}
            )
        # Owned shops whose token passes the reconciler's check, screened before each pass.
        screened = ScreenedShops(rt, self._owned_shops(keeper))
        claims = OwnedShopsStore(rt.pool, screened)
        reconciler = build_reconciler(rt, claims=claims, oc=oc, before_pass=screened.refresh)

        async def reconcile(stop: asyncio.Event) -> None:
            await reconciler_loop(rt, stop, reconciler=reconciler, board=self.board)

        self.board.register(RECONCILER, settings.reconciler.interval_s, kind="reconciler")
        self.supervisor.start("reconciler", reconcile)

    def _start_retention(self) -> None:
        """Prunes on a schedule in small batches ([retention]); one run at a time per schema
        (an advisory lock), so several daemons sharing a database take turns."""
        settings = self._rt.settings
        if not settings.retention.enabled:
            return
        loop = RetentionLoop(
            Pruner(self._rt.pool, policy_for(settings)),
            interval_s=settings.retention.interval_s,
            observe=RetentionMetrics(self._metrics.registry).observe,
            board=self.board,
        )
        # Reports each run: a prune failing run after run (Postgres refusing its deletes)
        # shows in /healthz by name; a long interval keeps it from ever reading as stale.
        self.board.register(RETENTION, settings.retention.interval_s, kind="retention")
        self.supervisor.start("retention", loop.run)

    def _owned_shops(self, keeper: LeaseKeeper) -> Callable[[], list[str]]:
        """The shops of the apps this process holds right now (leases come and go)."""
        shops_of = {s.id: s.app_key for s in self._rt.settings.shops}

        def owned_shops() -> list[str]:
            owned = set(keeper.owned)
            return [shop for shop, app in shops_of.items() if app in owned]

        return owned_shops

    async def serve(self) -> int:
        runner = self._runner
        hooks: Any = None
        keeper: LeaseKeeper | None = None
        apps: AppLoops | None = None
        try:
            apps = self._app_loops()
            keeper = self._keeper(apps)
            # The first lease round runs now: a lone daemon owns every app before READY, and
            # the monitor's first STATUS already counts them.
            await keeper.start()
            monitor = self._start_monitor(keeper)
            self._start_reconciler(keeper)
            self._start_retention()
            hooks = await start_webhooks(
                self._rt,
                supervisor=self.supervisor,
                metrics=self._metrics,
                owned_shops=self._owned_shops(keeper),
                board=self.board,
            )
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
            if hooks is not None:
                # Temu retries what we do not answer: stop taking events first.
                await self._stop_http(hooks)
            await self._shutdown(runner, keeper, apps)
        return ExitCode.OK

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
    observers: Observers,
    backoff: Backoff,
    opener: Callable[..., Awaitable[Runtime]] = open_runtime,
) -> Runtime | None:
    """Opens the runtime, retrying forever while the database is unavailable; None when
    stopped first. Each wait asks systemd for more start time, so a slow Postgres does not
    turn into a start timeout and a restart loop."""
    failures = 0
    while not stop.is_set():
        try:
            return await _until_stopped(stop, opener(settings, observers=observers))
        except STARTUP_ERRORS as exc:
            failures += 1
            delay = backoff.delay(failures)
            message = describe(exc)
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


async def _start_http(
    settings: Settings,
    metrics: Metrics,
    board: HealthBoard,
    submitter: Callable[[], LabelSubmitter | None],
) -> Any:
    http = settings.http
    if not http.listen:
        return None
    app = build_app(
        metrics=metrics,
        health=board,
        admin_token=http.admin_token,
        label_submitter=submitter,
        max_body_bytes=http.max_body_bytes,
    )
    return await start_http(app, http.listen)


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
    metrics = Metrics(
        app_keys=[a.app_key for a in settings.apps],
        webhook_events=settings.webhooks.events if settings.webhooks.enabled else (),
    )
    identity = Identity.of_this_process(settings.http.listen)
    holdings = Holdings(identity.owner, ClusterTiming(settings.cluster.lease_s))
    observers = Observers(
        request=metrics.observe_request,
        request_duration=metrics.observe_duration,
        token=lambda status: metrics.set_token_expiry(
            status.shop_id, None if status.expires_at is None else status.expires_at.timestamp()
        ),
        rows=metrics.add_rows,
        oc_token_refresh=metrics.oc_token_refreshed,
        send_gate=holdings.gate,
    )
    board = HealthBoard(slack_s=options.health_slack_s)
    # Up before Postgres: /livez answers, /healthz says what the daemon waits for, /metrics
    # serves; the admin API answers 503 until the label queue exists.
    submitters: list[LabelSubmitter] = []
    runner: Any = None
    try:
        runner = await _start_http(settings, metrics, board, lambda: next(iter(submitters), None))
        board.database_down("waiting for Postgres (start-up)")
        rt = await open_with_retry(
            settings,
            stop=stop,
            notifier=notifier,
            observers=observers,
            backoff=options.startup_backoff,
        )
        if rt is None:
            notifier.stopping("stopped before the database was available")
            log.info("stopped before the database was available")
            if runner is not None:
                await stop_http(runner)
            return ExitCode.OK
        submitters.append(label_submitter(rt))
        try:
            daemon = Daemon(
                rt,
                stop=stop,
                metrics=metrics,
                notifier=notifier,
                options=options,
                identity=identity,
                holdings=holdings,
                board=board,
                http_runner=runner,
            )
            return await daemon.serve()
        finally:
            began = time.monotonic()
            await rt.close(pool_timeout_s=options.close_timeout_s)
            log.info("closed the database and sessions in %.1f s", time.monotonic() - began)
    finally:
        if pinger is not None:
            pinger.cancel()
        signals.remove()
