"""The daemon's reconciler loop: a pass on every NOTIFY of the outbox channel and every
``reconciler.interval_s``, until stopped; a pass cut off by shutdown gets a short grace."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from engine.app.reconciler import build_reconciler
from engine.app.runtime import Runtime
from engine.daemon.deadline import run_with_deadline
from engine.daemon.health import HealthBoard
from engine.daemon.outbox_listener import OutboxListener
from engine.errors import describe
from engine.reconcile.reconciler import Reconciler
from engine.retry import sleep_or_any

__all__ = ["NAME", "STOP_GRACE_S", "reconciler_loop"]

log = logging.getLogger(__name__)

NAME = "reconciler"  # the loop's name on the health board
STOP_GRACE_S = 5.0


@contextlib.asynccontextmanager
async def _listening(rt: Runtime, wake: asyncio.Event) -> AsyncIterator[None]:
    """The outbox channel's LISTEN (engine/daemon/outbox_listener.py) kept up in the background
    while the loop runs; the loop never waits for it."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(OutboxListener(rt, wake).run(stop))
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 3.0)
        except TimeoutError:
            task.cancel()
        except asyncio.CancelledError:
            task.cancel()
            raise  # the loop itself is being cancelled: that must reach its caller
        except Exception:
            log.exception("reconciler: the LISTEN task failed")


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
            await sleep_or_any(interval, stop, wake)
