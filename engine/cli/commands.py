"""The bodies of the CLI commands: each opens what it needs, does its job, returns an exit code."""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import orjson

from engine.app.reconciler import reconcile_once
from engine.app.runtime import Observers, Runtime
from engine.app.runtime import open_database as _open_database
from engine.app.runtime import open_runtime as _open_runtime
from engine.cli.progress import BackfillProgress
from engine.cluster.holdings import ClusterTiming, Holdings
from engine.cluster.identity import Identity
from engine.cluster.keeper import LeaseKeeper
from engine.cluster.oneshot import AppsBusy, refuse_if_daemon_owns, take_leases_once
from engine.config import Settings
from engine.counters import RunCounters, build_summary
from engine.errors import DATABASE_ERRORS, ExitCode
from engine.store.leases import LeaseStore
from engine.store.migrate import migrate
from engine.store.pool import create_pool

log = logging.getLogger(__name__)


class CommandError(Exception):
    def __init__(self, message: str, exit_code: int = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def database_target(url: str) -> str:
    """``host:port/dbname`` of a libpq URL, never its password (for error messages)."""
    try:
        parts = urlsplit(url)
        # libpq also takes the host (a unix socket directory) as ?host=...
        query_host = parse_qs(parts.query).get("host", [""])[0]
        host = parts.hostname or query_host or "localhost"
        where = f"{host}:{parts.port or 5432}{parts.path or ''}"
    except ValueError:
        where = "the configured database.url"
    return where


def _database_error(settings: Settings, exc: BaseException) -> CommandError:
    """One-shot commands do not wait for Postgres (the daemon does): say clearly which server
    could not be used and why, and fail with exit code 1."""
    where = (
        database_target(settings.database.url)
        if settings.database.url
        else f"the embedded Postgres under {settings.database.data_dir}"
    )
    reason = str(exc).strip() or type(exc).__name__
    if settings.database.url:
        parts = urlsplit(settings.database.url)
        if parts.password:
            reason = reason.replace(parts.password, "***")
    return CommandError(f"cannot use Postgres at {where}: {reason}", ExitCode.FAILURE)


async def open_runtime(
    settings: Settings, observers: Observers | None = None, *, apply_migrations: bool = True
) -> Runtime:
    try:
        return await _open_runtime(settings, observers=observers, apply_migrations=apply_migrations)
    except DATABASE_ERRORS as exc:
        raise _database_error(settings, exc) from None


async def open_database(settings: Settings) -> tuple[str, Any]:
    try:
        return await _open_database(settings)
    except DATABASE_ERRORS as exc:
        raise _database_error(settings, exc) from None


# Whether this command already printed its --json summary: interface.md wants it as the
# LAST line of stdout, once, whatever ends the run.
_SUMMARY_PRINTED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "summary_printed", default=False
)


def print_json_summary(summary: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    sys.stdout.flush()
    _SUMMARY_PRINTED.set(True)


def _failed_summary(rt: Runtime, shops: Iterable[str], *, as_json: bool) -> None:
    """A run that failed, was stopped or was refused (another process owns the apps): with
    --json the last line of stdout is still the summary (interface.md), with what was done
    so far and every shop of the run failed."""
    if as_json and not _SUMMARY_PRINTED.get():
        rt.counters.shops_failed.update(shops)
        print_json_summary(rt.summary())


@contextlib.contextmanager
def _summary_on_failure(rt: Runtime, shops: Iterable[str], *, as_json: bool) -> Iterator[None]:
    try:
        yield
    except BaseException:
        _failed_summary(rt, shops, as_json=as_json)
        raise


def _summary_without_runtime(
    settings: Settings, shops: Iterable[str] | None, started: float | None
) -> None:
    """A one-shot run that failed before its runtime opened (no database, say): nothing was
    done, every shop of the run failed."""
    if _SUMMARY_PRINTED.get():
        return
    counters = RunCounters(shops_failed=set(shops or (s.id for s in settings.shops)))
    elapsed = time.monotonic() - started if started is not None else 0.0
    print_json_summary(
        build_summary(counters, requests=0, rate_limited=0, retries=0, elapsed_s=elapsed)
    )


def _exit_for(rt: Runtime, shops: list[str] | None = None) -> int:
    """0, or 3 when some shops failed and the others completed; 1 when every shop of the run
    failed (nothing completed, so it is a failure, not a partial result)."""
    failed = rt.counters.shops_failed
    if not failed:
        return ExitCode.OK
    selected = set(shops if shops is not None else (s.id for s in rt.settings.shops))
    return ExitCode.FAILURE if selected <= failed else ExitCode.PARTIAL


async def dispatch(
    args: argparse.Namespace, settings: Settings, *, started: float | None = None
) -> int:
    """``started``: when the command began (time.monotonic), the start of a one-shot run's
    ``elapsed_s``; None: when its runtime opened."""
    cmd = args.command
    one_shot = cmd in ("backfill", "reconcile") or (cmd == "run" and args.once)
    if one_shot and args.json:
        _SUMMARY_PRINTED.set(False)
        try:
            return await _dispatch(args, settings, started=started)
        except BaseException:
            _summary_without_runtime(settings, getattr(args, "shops", None), started)
            raise
    return await _dispatch(args, settings, started=started)


async def _dispatch(
    args: argparse.Namespace, settings: Settings, *, started: float | None = None
) -> int:
    cmd = args.command
    if cmd == "migrate":
        return await cmd_migrate(settings)
    if cmd == "status":
        from engine.cli.status import cmd_status

        return await cmd_status(settings, as_json=args.json)
    if cmd == "backfill":
        return await cmd_backfill(settings, args, started=started)
    if cmd == "run":
        if args.once:
            return await cmd_run_once(settings, as_json=args.json, started=started)
        from engine.daemon.main import run_daemon

        return await run_daemon(settings)
    if cmd == "reconcile":
        return await cmd_reconcile_once(settings, as_json=args.json, started=started)
    if cmd == "labels":
        return await cmd_labels_import(settings, args.file)
    if cmd == "webhooks":
        from engine.cli.webhooks import cmd_webhooks_subscribe

        return await cmd_webhooks_subscribe(settings, args.shops)
    if cmd == "prune":
        from engine.cli.prune import cmd_prune

        return await cmd_prune(settings, dry_run=args.dry_run, as_json=args.json)
    raise CommandError(f"unknown command {cmd}", ExitCode.USAGE)


@contextlib.asynccontextmanager
async def small_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """Two connections with the configured deadlines, for commands that only need the
    database (migrate, prune); a database error becomes a clear CommandError."""
    db = settings.database
    url, embedded = await open_database(settings)
    try:
        try:
            pool = await create_pool(
                url,
                db.schema,
                min_size=1,
                max_size=2,
                statement_timeout_s=db.statement_timeout_s,
                lock_timeout_s=db.lock_timeout_s,
                connect_timeout_s=db.connect_timeout_s,
            )
        except DATABASE_ERRORS as exc:
            raise _database_error(settings, exc) from None
        try:
            yield pool
        except DATABASE_ERRORS as exc:
            raise _database_error(settings, exc) from None
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            embedded.stop()


async def cmd_migrate(settings: Settings) -> int:
    async with small_pool(settings) as pool:
        applied = await migrate(pool, settings.database.schema)
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        print("schema is up to date")
    return ExitCode.OK


async def cmd_backfill(
    settings: Settings, args: argparse.Namespace, *, started: float | None = None
) -> int:
    streams = ["orders", "returns"] if args.stream == "all" else [args.stream]
    if args.until is not None and args.until <= args.since:
        raise CommandError("--until must be after --since", ExitCode.USAGE)
    # Every Temu send of the backfill passes its app's lease (held by the keeper below).
    identity = Identity.of_this_process()
    holdings = Holdings(identity.owner, ClusterTiming(settings.cluster.lease_s))
    rt = await open_runtime(settings, Observers(send_gate=holdings.gate))
    keeper: LeaseKeeper | None = None
    shops = args.shops or [s.id for s in settings.shops]
    try:
        with _summary_on_failure(rt, shops, as_json=args.json):
            try:
                keeper = await _lease_apps(rt, shops, identity, holdings)
            except CommandError:
                _failed_summary(rt, shops, as_json=args.json)
                raise
            service = rt.sync_service()
            end = args.until or datetime.now(UTC)
            progress = BackfillProgress(
                int(args.since.timestamp()),
                int(end.timestamp()),
                pairs=len(shops) * len(streams),
            )
            rt.since(started)
            result = await service.backfill(
                args.since, args.until, shop_ids=args.shops, streams=streams, progress=progress
            )
            progress.close()
            for (shop, stream), message in sorted(result.failed.items()):
                log.error("shop %s, stream %s failed: %s", shop, stream, message)
            _report(rt, as_json=args.json, title="backfill")
            return _exit_for(rt, shops)
    finally:
        if keeper is not None:
            await keeper.close()
        await rt.close()


async def _lease_apps(
    rt: Runtime, shops: list[str], identity: Identity, holdings: Holdings
) -> LeaseKeeper:
    """A backfill paces each app in this process: it takes the apps' leases like a daemon
    (without registering as one), so a daemon cannot sync the same app meanwhile. It waits
    for a lease left by another one-shot run and refuses when a running daemon owns one."""
    apps = {s.app_key for s in rt.settings.shops if s.id in shops}
    try:
        keeper = await take_leases_once(
            LeaseStore(rt.pool),
            apps,
            identity,
            timing=holdings.timing,
            holdings=holdings,
        )
    except AppsBusy as exc:
        raise CommandError(str(exc)) from None
    return keeper


async def _refuse_beside_daemons(rt: Runtime, command: str, *, as_json: bool) -> None:
    apps = {s.app_key for s in rt.settings.shops}
    try:
        await refuse_if_daemon_owns(LeaseStore(rt.pool), apps, command)
    except AppsBusy as exc:
        _failed_summary(rt, [s.id for s in rt.settings.shops], as_json=as_json)
        raise CommandError(str(exc)) from None


async def cmd_run_once(settings: Settings, *, as_json: bool, started: float | None = None) -> int:
    rt = await open_runtime(settings)
    try:
        with _summary_on_failure(rt, [s.id for s in settings.shops], as_json=as_json):
            await _refuse_beside_daemons(rt, "run --once", as_json=as_json)
            rt.since(started)
            await rt.sync_service().incremental_pass(respect_backoff=False)
            await _reconcile_pass(rt)
            _report(rt, as_json=as_json, title="run --once")
            return _exit_for(rt)
    finally:
        await rt.close()


async def cmd_reconcile_once(
    settings: Settings, *, as_json: bool, started: float | None = None
) -> int:
    rt = await open_runtime(settings)
    try:
        with _summary_on_failure(rt, [s.id for s in settings.shops], as_json=as_json):
            await _refuse_beside_daemons(rt, "reconcile --once", as_json=as_json)
            rt.since(started)
            await _reconcile_pass(rt)
            _report(rt, as_json=as_json, title="reconcile --once")
            return _exit_for(rt)
    finally:
        await rt.close()


async def _reconcile_pass(rt: Runtime) -> None:
    if not rt.settings.reconciler.enabled:
        return
    await reconcile_once(rt)


async def cmd_labels_import(settings: Settings, path: str) -> int:
    from engine.cli.labels import import_labels

    rt = await open_runtime(settings)
    try:
        return await import_labels(rt, path)
    finally:
        await rt.close()


def _report(rt: Runtime, *, as_json: bool, title: str) -> None:
    summary = rt.summary()
    if as_json:
        print_json_summary(summary)
        return
    o, r = summary["orders"], summary["returns"]
    assert isinstance(o, dict) and isinstance(r, dict)
    print(
        f"{title}: {summary['requests']} requests in {summary['elapsed_s']} s "
        f"({summary['qps']} req/s), {summary['rate_limited']} rate-limited, "
        f"{summary['retries']} retries\n"
        f"  orders:  {o['inserted']} inserted, {o['updated']} updated, "
        f"{o['unchanged']} unchanged\n"
        f"  returns: {r['inserted']} inserted, {r['updated']} updated, "
        f"{r['unchanged']} unchanged\n"
        f"  labels uploaded: {summary['labels_uploaded']}, OC updates: {summary['oc_updates']}"
    )
    failed = summary["shops_failed"]
    if failed:
        print(f"  shops failed: {', '.join(failed)}")  # type: ignore[arg-type]


async def demo(args: argparse.Namespace) -> int:
    from engine.cli.demo import run_demo

    return await run_demo()


async def simulate(args: argparse.Namespace) -> int:
    from engine.sim.config import SimConfig
    from engine.sim.server import serve_forever

    config = SimConfig.default(
        orders=args.orders,
        returns=args.returns,
        shops=args.shops,
        seed=args.seed,
        fault_rate=args.faults,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        drift_rate=args.drift,
        poison=args.poison,
    )
    await serve_forever(args.listen, config)
    return ExitCode.OK
