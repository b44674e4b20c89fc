"""Builds the reconciler from a Runtime and runs it: one pass, the daemon loop, label import.

Exit codes of ``labels import FILE`` (``import_labels``):
  0  every non-blank line was queued (also an empty file: nothing to do)
  1  no line could be queued (every label was refused)
  2  the file cannot be read
  3  some lines were refused, the others were queued
Refused lines are printed to stderr as ``line N: reason``; the count goes to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from engine.app.runtime import Runtime
from engine.oc.client import OCClient
from engine.reconcile.carriers import CarrierDirectory
from engine.reconcile.executor import ExecStats, Executor, exponential_backoff
from engine.reconcile.labels import parse_label_lines
from engine.reconcile.oc_cancel import OcCancel
from engine.reconcile.oc_rmas import PgTokenStore, RmaWait
from engine.reconcile.oc_tracking import OcTracking
from engine.reconcile.planner import Planner, PlanStats
from engine.reconcile.ports import LabelRejected, LabelSubmitter
from engine.reconcile.submit import LabelQueue, ReturnLabelSubmitter
from engine.reconcile.tasks import Handler
from engine.reconcile.temu_side import TemuReturns
from engine.reconcile.upload_label import UploadLabel
from engine.store.reconcile_store import ReconcileStore
from engine.store.store import Store

log = logging.getLogger(__name__)

CHANNEL = "temu_sync_outbox"
BACKOFF_CAP_S = 3600.0
POLL_CAP_S = 3600.0
# An OC label is usually issued within minutes: the first polls come at the next passes, then
# the wait doubles, so a return whose RMA never gets a label costs a few calls per day.
EAGER_POLLS = 3
# reconciler.rma_wait_polls looks on this schedule span about a day by default (30 looks:
# 5, 10, 20, 40 minutes, then hourly).
RMA_FIRST_LOOK_S = 300.0
STOP_GRACE_S = 5.0
# interface.md: bad lines are reported and skipped, good lines still queued; that is success
# (0). Exit 3 is reserved for "some shops failed", so only "nothing could be queued" fails (1).
EXIT_OK, EXIT_NONE_QUEUED, EXIT_UNREADABLE = 0, 1, 2


@dataclass
class PassStats:
    plan: PlanStats
    run: ExecStats


class Reconciler:
    def __init__(self, planner: Planner, executor: Executor) -> None:
        self.planner = planner
        self.executor = executor

    async def run_pass(self) -> PassStats:
        plan = await self.planner.plan()
        return PassStats(plan, await self.executor.run_due())


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def rma_wait_schedule() -> Callable[[int], float]:
    """Looks for an RMA that OC does not have yet: a merchant opens it minutes or hours after
    Temu's event, never within seconds, so the first look again is after RMA_FIRST_LOOK_S,
    doubling up to an hour. Eager looks at every pass would spend the OC budget (qps 5) that
    label uploads need: 27 such tasks cost 5 s of OC calls per pass in the mixed benchmark."""

    def delay(polls: int) -> float:
        return float(min(POLL_CAP_S, RMA_FIRST_LOOK_S * 2**polls))

    return delay


def poll_schedule(base_s: float) -> Callable[[int], float]:
    def delay(polls: int) -> float:
        if polls < EAGER_POLLS:
            return 0.0
        return float(min(POLL_CAP_S, max(base_s, 1.0) * 2 ** (polls - EAGER_POLLS)))

    return delay


def temu_returns(rt: Runtime) -> dict[str, TemuReturns]:
    return {shop.id: TemuReturns(rt.shop_apis[shop.id]) for shop in rt.settings.shops}


def oc_client(rt: Runtime) -> OCClient | None:
    settings = rt.settings.orange_connex
    if not settings.enabled:
        return None
    # The rotated refresh token lives in Postgres; the configured one only seeds it.
    return OCClient(
        rt.session, settings, PgTokenStore(rt.store), on_token_refresh=rt.on_oc_token_refresh
    )


def build_reconciler(
    rt: Runtime,
    *,
    owner: str | None = None,
    backoff_base_s: float | None = None,
    oc: OCClient | None = None,
    claims: Store | None = None,
) -> Reconciler:
    """``claims``: where the executor claims tasks (a daemon sharing the database passes one
    limited to the shops of its apps); default rt.store."""
    cfg = rt.settings.reconciler
    recon = ReconcileStore(rt.pool)
    oc = oc if oc is not None else oc_client(rt)
    base = cfg.interval_s if backoff_base_s is None else backoff_base_s
    handlers: dict[str, Handler] = {
        "upload_label": UploadLabel(
            store=rt.store,
            recon=recon,
            temu=temu_returns(rt),
            carriers=CarrierDirectory(),
            oc=oc,
            counters=rt.counters,
            default_mode=cfg.logistic_mode,
            poll_delay=poll_schedule(cfg.interval_s),
        )
    }
    if oc is not None:
        no_rma = RmaWait(rma_wait_schedule(), cfg.rma_wait_polls)
        handlers["oc_cancel"] = OcCancel(oc=oc, counters=rt.counters, no_rma=no_rma)
        handlers["oc_tracking"] = OcTracking(oc=oc, counters=rt.counters, no_rma=no_rma)
    executor = Executor(
        store=claims or rt.store,
        recon=recon,
        handlers=handlers,
        owner=owner or worker_id(),
        lease_s=cfg.lease_s,
        max_attempts=cfg.max_attempts,
        backoff=exponential_backoff(base, BACKOFF_CAP_S),
    )
    return Reconciler(Planner(recon, oc_enabled=oc is not None), executor)


async def reconcile_once(rt: Runtime) -> None:
    """One pass: plan, then run every due task once (counters land in rt.counters)."""
    stats = await build_reconciler(rt).run_pass()
    log.info("reconciler pass: %s", stats)


# -- the daemon loop ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _listening(pool: asyncpg.Pool, wake: asyncio.Event) -> AsyncIterator[None]:
    """LISTEN on the outbox channel on a pooled connection held for the loop's lifetime.

    Without it (the connection broke) the loop still runs on its timer.
    """

    def on_notify(*_: object) -> None:
        wake.set()

    conn: asyncpg.pool.PoolConnectionProxy | None = None
    try:
        conn = await pool.acquire()
        await conn.add_listener(CHANNEL, on_notify)
    except Exception as exc:
        log.warning("reconciler: LISTEN %s failed (%s); running on the timer only", CHANNEL, exc)
    try:
        yield
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.remove_listener(CHANNEL, on_notify)
            with contextlib.suppress(Exception):
                await pool.release(conn)


async def _sleep_until(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _pass_or_stop(reconciler: Reconciler, stop: asyncio.Event) -> None:
    work = asyncio.ensure_future(reconciler.run_pass())
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
    rt: Runtime, stop: asyncio.Event, *, reconciler: Reconciler | None = None
) -> None:
    """Passes on NOTIFY temu_sync_outbox and every ``reconciler.interval_s``, until ``stop``."""
    reconciler = reconciler or build_reconciler(rt)
    interval = max(0.05, rt.settings.reconciler.interval_s)
    wake = asyncio.Event()
    async with _listening(rt.pool, wake):
        while not stop.is_set():
            wake.clear()
            try:
                await _pass_or_stop(reconciler, stop)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciler pass failed; next try in %.1fs", interval)
            if stop.is_set():
                break
            await _sleep_until(stop, wake, interval)


# -- merchant labels ---------------------------------------------------------------------------


def label_queue(rt: Runtime) -> LabelQueue:
    return LabelQueue(
        recon=ReconcileStore(rt.pool), temu=temu_returns(rt), carriers=CarrierDirectory()
    )


def label_submitter(rt: Runtime) -> LabelSubmitter:
    """The admin endpoint's submitter (POST /returns/{sn}/fulfillment)."""
    return ReturnLabelSubmitter(label_queue(rt), [s.id for s in rt.settings.shops])


async def import_labels(rt: Runtime, path: str) -> int:
    try:
        data = await asyncio.to_thread(Path(path).read_bytes)
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    good, bad = parse_label_lines(data, [s.id for s in rt.settings.shops])
    queue = label_queue(rt)
    queued = 0
    for line_no, req in good:
        try:
            result = await queue.queue(req)
        except LabelRejected as exc:
            bad.append((line_no, exc.reason))
            continue
        queued += 1
        if result.duplicate:
            log.info("line %d: the same label was already queued", line_no)
    for line_no, reason in sorted(bad):
        print(f"line {line_no}: {reason}", file=sys.stderr)
    print(f"{queued} label(s) queued, {len(bad)} line(s) refused")
    return EXIT_NONE_QUEUED if bad and not queued else EXIT_OK
