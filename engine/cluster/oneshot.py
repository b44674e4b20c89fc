"""Leases for one-shot commands: a backfill takes its apps' leases (waiting out a killed
run's), keeps them renewed and releases them; ``run --once`` and ``reconcile --once`` take none
and so refuse to run beside a daemon that owns one of their apps. Only ``LeaseKeeper``'s public
methods are used here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from engine.cluster.holdings import ClusterTiming, Holdings
from engine.cluster.identity import Identity
from engine.cluster.keeper import LeaseKeeper
from engine.store.leases import Lease, LeaseStore

__all__ = ["AppsBusy", "refuse_if_daemon_owns", "take_leases_once"]

log = logging.getLogger(__name__)


class AppsBusy(Exception):
    """A one-shot command needs an app a running daemon owns."""


async def take_leases_once(
    store: LeaseStore,
    apps: Iterable[str],
    identity: Identity,
    *,
    timing: ClusterTiming,
    give_up_after_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    holdings: Holdings | None = None,
) -> LeaseKeeper:
    """For one-shot commands (backfill): takes the leases of ``apps`` and keeps them renewed
    until ``close()``. Raises AppsBusy naming the owner when a live daemon holds one; waits
    for a lease held by another one-shot run (or a just-killed one) to expire."""
    keeper = LeaseKeeper(
        store, sorted(set(apps)), identity, timing=timing, daemon=False, holdings=holdings
    )
    deadline = clock() + (timing.lease_s * 2 if give_up_after_s is None else give_up_after_s)
    try:
        for app in keeper.apps:
            replacing: str | None = None
            while not await keeper.take(app, replacing):
                lease = next((x for x in await store.leases() if x.app_key == app), None)
                if lease is not None and keeper.is_dead_here(lease.owner, lease.owner_local):
                    replacing = lease.owner  # a killed run on this machine: no need to wait
                    continue
                daemons = {d.owner: d for d in await store.daemons() if d.live}
                if lease is not None and lease.live and lease.owner in daemons:
                    raise AppsBusy(_busy_message(app, lease))
                if clock() > deadline:
                    raise AppsBusy(f"app {app}: its lease did not become free in time")
                log.info("app %s is leased to %s; waiting for it", app, _who(lease))
                await asyncio.sleep(min(1.0, timing.renew_every_s))
        # Leases taken from a dead run start only after the rate limit's window.
        await asyncio.sleep(max(0.0, keeper.ready_at() - clock()))
    except BaseException:
        await keeper.close()
        raise
    keeper.keep_renewing()
    return keeper


def _who(lease: Lease | None) -> str:
    return "nobody" if lease is None else f"{lease.owner} (until {lease.expires_at:%H:%M:%S})"


def _busy_message(app: str, lease: Lease, command: str = "the backfill") -> str:
    return (
        f"app {app} is owned by the running daemon {lease.owner} (host {lease.owner_host}) "
        f"since {lease.acquired_at.isoformat(timespec='seconds')}; two processes calling "
        "Temu for one app would exceed its rate limit. Stop that daemon (or every daemon "
        f"that could take the app) and run {command} again."
    )


async def refuse_if_daemon_owns(store: LeaseStore, apps: Iterable[str], command: str) -> None:
    """One-shot passes (``run --once``, ``reconcile --once``) take no lease, so they must not
    run beside a daemon that paces the same app: that would double the app's request rate."""
    wanted = set(apps)
    daemons = {d.owner for d in await store.daemons() if d.live}
    for lease in await store.leases():
        if lease.app_key in wanted and lease.live and lease.owner in daemons:
            raise AppsBusy(_busy_message(lease.app_key, lease, command))


async def apps_paced_elsewhere(store: LeaseStore, apps: Iterable[str]) -> set[str]:
    """Of ``apps``, those whose lease another process holds now (a daemon, a backfill): its
    pacer owns their rate, so a command that takes no lease must send them nothing."""
    wanted = set(apps)
    return {lease.app_key for lease in await store.leases() if lease.live} & wanted
