"""The daemon's reconciler loop: a pass on every NOTIFY of the outbox channel and every
``reconciler.interval_s``, until stopped; a pass cut off by shutdown gets a short grace."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from engine.app.reconciler import build_reconciler
from engine.app.runtime import Runtime
from engine.daemon.deadline import run_with_deadline
from engine.daemon.health import HealthBoard
from engine.errors import describe
from engine.reconcile.reconciler import Reconciler
from engine.store.pool import server_settings

__all__ = ["NAME", "STOP_GRACE_S", "reconciler_loop"]

log = logging.getLogger(__name__)

NAME = "reconciler"  # the loop's name on the health board
STOP_GRACE_S = 5.0


@contextlib.asynccontextmanager
async def _listening(rt: Runtime, wake: asyncio.Event) -> AsyncIterator[None]:
    """LISTEN on the schema's outbox channel (``outbox_channel()``, migration 14: channels are
    database-wide, the name tells schemas apart) on a connection of its own, outside the
    pool: a pooled connection held for the loop's lifetime would leave one fewer for the
    writes (and with a small pool, none). Without it (no connection, or it broke) the loop
    still runs on its timer."""

    def on_notify(*_: object) -> None:
        wake.set()

    conn: asyncpg.Connection | None = None
    channel = "the outbox channel"
    try:
        db = rt.settings.database
        conn = await asyncpg.connect(
            rt.database_url,
            server_settings=server_settings(db.schema),
            timeout=db.connect_timeout_s,
        )
        channel = await conn.fetchval("SELECT outbox_channel()")
        await conn.add_listener(channel, on_notify)
    except Exception as exc:
        log.warning("reconciler: LISTEN %s failed (%s); running on the timer only", channel, exc)
    try:
        yield
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)
            if not conn.is_closed():
                conn.terminate()


async def _sleep_until(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _watched_pass(reconciler: Reconciler, board: HealthBoard | None) -> None:
    if board is None:
        await reconciler.run_pass()
        return
    await run_with_deadline(
        reconciler.run_pass(lambda: board.progress(NAME)),
        idle_s=lambda: board.idle_s(NAME),
        limit_s=board.stale_after_s(NAME),
    )


async def _pass_or_stop(
    reconciler: Reconciler, stop: asyncio.Event, board: HealthBoard | None
) -> None:
    work = asyncio.ensure_future(_watched_pass(reconciler, board))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            # Let in-flight tasks book their outcome; what is cut off is re-taken after the
            # lease, and an interrupted upload is re-read before any second try.
            await asyncio.wait({work}, timeout=STOP_GRACE_S)
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return
        work.result()
    finally:
        stopper.cancel()
        if not work.done():
            # Cancelled from outside (daemon shutdown): never leave the pass running on a pool
            # and session that are about to close.
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work


async def reconciler_loop(
    rt: Runtime,
    stop: asyncio.Event,
    *,
    reconciler: Reconciler | None = None,
    board: HealthBoard | None = None,
) -> None:
    """Passes on NOTIFY of the outbox channel and every ``reconciler.interval_s``, until ``stop``.

    With a ``board`` (the daemon registers the loop as ``reconciler``), each pass reports its
    success or failure there, and a pass that makes no progress within the loop's stale limit is
    cancelled: a reconciler failing or hung shows in /healthz by name."""
    reconciler = reconciler or build_reconciler(rt)
    interval = max(0.05, rt.settings.reconciler.interval_s)
    wake = asyncio.Event()
    async with _listening(rt, wake):
        while not stop.is_set():
            wake.clear()
            try:
                await _pass_or_stop(reconciler, stop, board)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("reconciler pass failed; next try in %.1fs", interval)
                if board is not None:
                    board.failed(NAME, describe(exc))
            else:
                if board is not None and not stop.is_set():
                    board.succeeded(NAME)
            if stop.is_set():
                break
            await _sleep_until(stop, wake, interval)
