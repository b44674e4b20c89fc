"""Builds the reconciler from a Runtime (its handlers, the OC client, the label intake) and
runs one pass. The daemon's loop around it is ``engine/daemon/reconciler_loop.py``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterable

from engine.app.runtime import Runtime
from engine.cluster.claims import OwnedShopsStore
from engine.cluster.identity import new_owner_id
from engine.oc.client import OCClient
from engine.reconcile.carriers import CarrierDirectory
from engine.reconcile.executor import Executor
from engine.reconcile.oc_cancel import OcCancel
from engine.reconcile.oc_rmas import PgTokenStore, RmaWait
from engine.reconcile.oc_tracking import OcTracking
from engine.reconcile.planner import LATE_COMMIT_OVERLAP_S, Planner
from engine.reconcile.ports import LabelSubmitter
from engine.reconcile.reconciler import Reconciler
from engine.reconcile.submit import LabelQueue, ReturnLabelSubmitter
from engine.reconcile.tasks import Handler
from engine.reconcile.temu_side import TemuReturns
from engine.reconcile.upload_label import UploadLabel
from engine.retry import exponential_backoff, poll_schedule, rma_wait_schedule
from engine.store.reconcile_store import ReconcileStore
from engine.store.store import Store
from engine.sync.tokens import TokenScreen
from engine.temu.token_info import RECONCILER_SCOPES

log = logging.getLogger(__name__)

BACKOFF_CAP_S = 3600.0
POLL_CAP_S = 3600.0
# An OC label is usually issued within minutes: the first polls come at the next passes, then
# the wait doubles, so a return whose RMA never gets a label costs a few calls per day.
EAGER_POLLS = 3
# reconciler.rma_wait_polls looks on this schedule span about a day by default (30 looks:
# 5, 10, 20, 40 minutes, then hourly).
RMA_FIRST_LOOK_S = 300.0
# interface.md: bad lines are reported and skipped, good lines still queued; that is success
# (0). Exit 3 is reserved for "some shops failed", so only "nothing could be queued" fails (1).


def worker_id() -> str:
    return new_owner_id()


def temu_returns(rt: Runtime) -> dict[str, TemuReturns]:
    return {shop.id: TemuReturns(rt.shop_apis[shop.id]) for shop in rt.settings.shops}


def oc_client(rt: Runtime) -> OCClient | None:
    settings = rt.settings.orange_connex
    if not settings.enabled:
        return None
    # The rotated refresh token lives in Postgres; the configured one only seeds it.
    return OCClient(
        rt.oc_session,
        settings,
        PgTokenStore(rt.store),
        on_token_refresh=rt.observers.oc_token_refresh,
    )


def configured_claims(rt: Runtime) -> Store:
    shops = [shop.id for shop in rt.settings.shops]
    return OwnedShopsStore(rt.pool, lambda: shops)


TASK_CONCURRENCY = 8
MAX_CLAIM_BATCH = 50


def claim_batch(lease_s: float, longest_call_s: float) -> int:
    """How many tasks one claim takes: no more than can run within the lease. Tasks of a claim
    run ``TASK_CONCURRENCY`` at a time, each at least one call long, so the last of a bigger
    batch would start after its lease ran out (taken again elsewhere, the work wasted)."""
    rounds = max(1, int(lease_s // max(longest_call_s, 0.001)))
    return max(1, min(MAX_CLAIM_BATCH, TASK_CONCURRENCY * rounds))


def build_reconciler(
    rt: Runtime,
    *,
    owner: str | None = None,
    backoff_base_s: float | None = None,
    oc: OCClient | None = None,
    claims: Store | None = None,
    before_pass: Callable[[], Awaitable[None]] | None = None,
) -> Reconciler:
    """``claims``: where the executor claims tasks (a daemon sharing the database passes one
    limited to the shops of its apps); default: tasks of the configured shops only, so a
    one-shot pass never takes (and parks) the tasks of shops another config serves."""
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
            poll_delay=poll_schedule(cfg.interval_s, eager=EAGER_POLLS, cap_s=POLL_CAP_S),
        )
    }
    if oc is not None:
        no_rma = RmaWait(rma_wait_schedule(RMA_FIRST_LOOK_S, POLL_CAP_S), cfg.rma_wait_polls)
        handlers["oc_cancel"] = OcCancel(oc=oc, counters=rt.counters, no_rma=no_rma)
        handlers["oc_tracking"] = OcTracking(oc=oc, counters=rt.counters, no_rma=no_rma)
    executor = Executor(
        store=claims or configured_claims(rt),
        recon=recon,
        handlers=handlers,
        owner=owner or worker_id(),
        lease_s=cfg.lease_s,
        max_attempts=cfg.max_attempts,
        backoff=exponential_backoff(base, BACKOFF_CAP_S),
        batch=claim_batch(cfg.lease_s, max((a.timeout_s for a in rt.settings.apps), default=1.0)),
        concurrency=TASK_CONCURRENCY,
    )
    # A change row committed late (its transaction ran long) must still be read: look back
    # further than the longest write the statement timeout allows (a page write is a few
    # statements).
    overlap = max(LATE_COMMIT_OVERLAP_S, 3 * rt.settings.database.statement_timeout_s)
    planner = Planner(recon, oc_enabled=oc is not None, overlap_s=overlap)
    return Reconciler(planner, executor, before_pass=before_pass)


class ScreenedShops:
    """The shops whose token passes the reconciler's check (interface.md "Access tokens": the
    label APIs), asked again before every pass (the stored daily answer: a read, not a Temu
    call): a refused shop's tasks are not claimed, they wait untouched. A callable for
    OwnedShopsStore; ``refused``: shop -> why, as of the last pass (logged when it changes)."""

    def __init__(self, rt: Runtime, shops: Callable[[], Iterable[str]]) -> None:
        self._rt = rt
        self._shops = shops
        self._current: list[str] = []
        self.refused: dict[str, str] = {}

    async def refresh(self) -> None:
        screen = TokenScreen(self._rt.token_gate(RECONCILER_SCOPES), log_refusals=False)
        self._current = await screen.usable(self._shops())
        for shop_id, why in screen.refused.items():
            if self.refused.get(shop_id) != why:
                log.error("reconciler: access token check failed: %s", why, extra={"shop": shop_id})
        self.refused = dict(screen.refused)

    def __call__(self) -> list[str]:
        return self._current


async def reconcile_once(rt: Runtime) -> None:
    """One pass: plan, then run every due task once (counters land in rt.counters).

    interface.md "Access tokens": each shop's token is checked first (the reconciler's API
    types only); a refused shop's tasks are left untouched. Refused shops, and shops whose
    tasks Temu refused for the token or the app, land in ``rt.counters.shops_failed``."""
    screened = ScreenedShops(rt, lambda: [s.id for s in rt.settings.shops])
    claims = OwnedShopsStore(rt.pool, screened)
    stats = await build_reconciler(rt, claims=claims, before_pass=screened.refresh).run_pass()
    rt.counters.shops_failed.update(screened.refused)
    rt.counters.shops_failed.update(stats.run.shops_failed)
    log.info("reconciler pass: %s", stats)


# -- merchant labels ---------------------------------------------------------------------------


def label_queue(
    rt: Runtime,
    gate: Callable[[str], Awaitable[None]] | None = None,
    *,
    unchecked: Collection[str] = (),
) -> LabelQueue:
    return LabelQueue(
        recon=ReconcileStore(rt.pool),
        temu=temu_returns(rt),
        carriers=CarrierDirectory(),
        gate=gate,
        unchecked=unchecked,
    )


def label_submitter(rt: Runtime) -> LabelSubmitter:
    """The admin endpoint's submitter (POST /returns/{sn}/fulfillment)."""
    return ReturnLabelSubmitter(label_queue(rt), [s.id for s in rt.settings.shops])
