"""Several daemons, one database: each app_key (with all its shops) is synced by exactly one
process at a time, the holder of the app's lease in Postgres (``engine/store/leases.py``).

Why per app and not per shop: Temu's limit is per app_key, shared by all of its shops, and the
pacer that keeps to it (``AppPacer``) only sees its own process. One owner per app keeps the
whole limit in one pacer, so it holds across machines with no cross-process coordination per
request.

Timing (L = ``lease_s``): renew every L/3; a lease is taken atomically by an INSERT ... ON
CONFLICT DO UPDATE ... WHERE expires_at <= now() (the conflict branch locks the row, so two
takers cannot both win; no advisory lock or session state to lose with a connection). Expiry
is judged by Postgres' clock, the one all machines share. Locally, a lease renewed by a
statement sent at monotonic time t is trusted until t + L - margin only: Postgres set
expires_at >= t + L, so the process stops sending at least ``margin`` before anyone else may
start, however its renewals fail (timeout, partition, dead database). The margin is more than
one second, so the old and the new owner never share a sliding second of the rate limit; a
graceful release keeps the lease ``cooldown`` seconds past the last request for the same
reason.

Fair share: every daemon heartbeats into ``daemons``; each aims for ceil(apps / live daemons),
takes free or expired leases when under it and, when over it, stops one app's loops (the page
in flight is written), then releases it. ``apps`` is this process's config: every daemon of a
cluster must run the same config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from engine.cluster.holdings import ClusterTiming, Holdings, _Held
from engine.cluster.identity import Identity, owner_pid, pid_alive
from engine.errors import DATABASE_ERRORS
from engine.logs import redact
from engine.retry import sleep_or_stop
from engine.store.leases import DaemonRow, LeaseStore

__all__ = [
    "AppHooks",
    "LeaseKeeper",
    "fair_share",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

COOLDOWN_S = 1.2
# Dead daemons' rows stay visible to `status` this long after they stopped heartbeating.
KEEP_DEAD_S = 3600.0


def fair_share(apps: int, live: int) -> int:
    """How many apps one of ``live`` daemons should own: ceil(apps / live)."""
    if apps <= 0:
        return 0
    return math.ceil(apps / max(1, live))


class AppHooks(Protocol):
    """What the daemon does when an app becomes its own or stops being so."""

    async def start_app(self, app_key: str) -> None: ...

    async def stop_app(self, app_key: str, *, graceful: bool) -> None:
        """graceful: let in-flight work finish (a handover); else stop at once (lease lost)."""
        ...


@dataclass
class LeaseKeeper:
    """Holds this process's app leases: acquires, renews, rebalances, releases.

    ``daemon=False`` is for one-shot commands: they take given leases, keep them renewed and
    release them, but do not register as a daemon nor rebalance.
    """

    store: LeaseStore
    apps: Sequence[str]
    identity: Identity
    timing: ClusterTiming = field(default_factory=ClusterTiming)
    hooks: AppHooks | None = None
    daemon: bool = True
    clock: Callable[[], float] = time.monotonic
    is_alive: Callable[[int], bool] = pid_alive
    rng: random.Random = field(default_factory=random.Random)
    holdings: Holdings | None = None

    def __post_init__(self) -> None:
        if self.holdings is None:
            self.holdings = Holdings(self.identity.owner, self.timing, self.clock)
        self._holdings: Holdings = self.holdings
        self._held = self._holdings.held
        self._releasing: dict[str, asyncio.Task[None]] = {}
        self._live: list[DaemonRow] = []
        self._dead_local: set[str] = set()
        self._stop = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._starting: set[asyncio.Task[None]] = set()
        self.last_error: str | None = None
        self.lost = 0

    # -- what the rest of the process asks ------------------------------------------------
    @property
    def owner(self) -> str:
        return self.identity.owner

    def owns(self, app_key: str) -> bool:
        return self._holdings.owns(app_key)

    @property
    def owned(self) -> list[str]:
        return sorted(a for a in self._held if self.owns(a))

    def gate(self, app_key: str) -> Callable[[], None]:
        return self._holdings.gate(app_key)

    def snapshot(self) -> dict[str, Any]:
        """For /healthz and `status`: who am I, what do I own since when, who else runs."""
        return {
            "owner": self.owner,
            "apps": {a: h.since.isoformat() for a, h in sorted(self._held.items())},
            "releasing": sorted(self._releasing),
            "daemons": [d.owner for d in self._live],
            "target": self.target,
            "last_error": None if self.last_error is None else redact(self.last_error),
        }

    @property
    def target(self) -> int:
        if not self.daemon:
            return len(self.apps)
        return fair_share(len(self.apps), max(1, len(self._live)))

    # -- lifecycle ------------------------------------------------------------------------
    def ready_at(self) -> float:
        """Monotonic time from which every held app may send (after a dead holder's window)."""
        return max((h.not_before for h in self._held.values()), default=0.0)

    def keep_renewing(self) -> None:
        """Renews the held leases in the background until ``close()`` (one-shot commands)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="lease-keeper")

    async def start(self) -> None:
        """First round at once (so a lone daemon owns everything before READY), then the
        background round every L/3 and a watch on the deadlines."""
        await self._tick_logged()
        self._task = asyncio.create_task(self._run(), name="lease-keeper")

    async def stop_apps(self) -> None:
        """Shutdown, first half: stops every owned app gracefully; the leases are still
        renewed meanwhile, so in-flight pages are written under a valid lease."""
        self._closing = True
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        pending = list(self._releasing.values())
        apps = [a for a in self._held if a not in self._releasing]
        if self.hooks is not None:
            await asyncio.gather(
                *(self.hooks.stop_app(a, graceful=True) for a in apps), return_exceptions=True
            )
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self, *, release_timeout_s: float = 1.0) -> None:
        """Stops the apps (unless done), releases the leases with the cooldown and
        unregisters the daemon."""
        if not self._closing:
            await self.stop_apps()
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        mine = list(self._held)
        self._held.clear()
        try:
            if mine:
                await asyncio.wait_for(
                    self.store.release(mine, self.owner, cooldown_s=COOLDOWN_S), release_timeout_s
                )
                log.info("released app leases: %s", ", ".join(sorted(mine)))
            if self.daemon:
                await asyncio.wait_for(self.store.remove_daemon(self.owner), release_timeout_s)
        except DATABASE_ERRORS as exc:
            log.warning("could not release leases (they expire on their own): %s", exc)

    async def _run(self) -> None:
        watch = asyncio.create_task(self._watch(), name="lease-watch")
        try:
            while not self._stop.is_set():
                ok = await self._tick_logged()
                delay = self.timing.renew_every_s if ok else self.timing.retry_s
                if await sleep_or_stop(self._stop, delay):
                    break
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def _tick_logged(self) -> bool:
        try:
            await self.tick()
        except DATABASE_ERRORS as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("lease round failed: %s", self.last_error)
            await self.check_deadlines()
            return False
        except Exception:
            # A bug in a round must not end the renewals of the others.
            log.exception("lease round failed")
            return False
        self.last_error = None
        return True

    async def _watch(self) -> None:
        """Stops an app as soon as its lease could be taken by another process soon: renewals
        are on a timer that a hung database call can delay; this is not."""
        while True:
            await self.check_deadlines()
            soonest = min(
                (h.deadline - self.timing.margin_s for h in self._held.values()), default=None
            )
            wait = 0.5 if soonest is None else min(0.5, max(0.02, soonest - self.clock()))
            await asyncio.sleep(wait)

    async def check_deadlines(self) -> None:
        now = self.clock()
        expired = [a for a, h in self._held.items() if now >= h.deadline - self.timing.margin_s]
        for app in expired:
            await self._lose(app, "not renewed in time (database unreachable?)")

    # -- one round ------------------------------------------------------------------------
    async def _call(self, work: Awaitable[T]) -> T:
        return await asyncio.wait_for(work, self.timing.call_timeout_s)

    async def tick(self) -> None:
        if self.daemon:
            await self._heartbeat()
        await self._renew()
        if not self.daemon or self._closing:
            return
        active = [a for a in self._held if a not in self._releasing]
        target = self.target
        if len(active) > target:
            # The most recently taken go first: long-held apps keep their warm pacer.
            extra = sorted(active, key=lambda a: self._held[a].since, reverse=True)
            for app in extra[: len(active) - target]:
                self._begin_release(app)
        elif len(active) < target and not self._releasing:
            await self._acquire_up_to(target - len(active))

    async def _heartbeat(self) -> None:
        ident = self.identity
        live = await self._call(
            self.store.heartbeat(
                self.owner,
                host=ident.host,
                pid=ident.pid,
                local_id=ident.local_id,
                listen=ident.listen,
                ttl_s=self.timing.lease_s,
            )
        )
        alive = []
        for d in live:
            if d.owner != self.owner and self.is_dead_here(d.owner, d.local_id):
                log.info("daemon %s is gone (no such process here); not waiting for it", d.owner)
                await self._call(self.store.remove_daemon(d.owner))
                continue
            alive.append(d)
        if [d.owner for d in alive] != [d.owner for d in self._live]:
            log.info("live daemons: %s", ", ".join(d.owner for d in alive))
        self._live = alive
        if self.rng.random() < 0.05:
            await self._call(self.store.prune_daemons(KEEP_DEAD_S))

    def is_dead_here(self, owner: str, local_id: str) -> bool:
        """Whether ``owner`` ran on this machine and its process is gone."""
        if local_id != self.identity.local_id:
            return False
        if owner in self._dead_local:
            return True
        pid = owner_pid(owner)
        if pid is None or pid == self.identity.pid or self.is_alive(pid):
            return False
        self._dead_local.add(owner)
        return True

    async def _renew(self) -> None:
        apps = list(self._held)
        if not apps:
            return
        sent = self.clock()
        renewed = await self._call(self.store.renew(apps, self.owner, ttl_s=self.timing.lease_s))
        for app in apps:
            held = self._held.get(app)
            if held is None:
                continue  # lost while the renewal was in flight: stays lost
            if app in renewed:
                held.deadline = sent + self.timing.lease_s
            else:
                await self._lose(app, "the lease was taken by another process")

    async def _acquire_up_to(self, wanted: int) -> None:
        leases = {lease.app_key: lease for lease in await self._call(self.store.leases())}
        candidates: list[tuple[str, str | None]] = []
        for app in self.apps:
            if app in self._held:
                continue
            lease = leases.get(app)
            if lease is None or not lease.live or lease.owner == self.owner:
                candidates.append((app, None))
            elif self.is_dead_here(lease.owner, lease.owner_local):
                candidates.append((app, lease.owner))
        # Random order: daemons starting together rarely race for the same row.
        self.rng.shuffle(candidates)
        for app, replacing in candidates:
            if wanted <= 0:
                return
            if await self.take(app, replacing):
                wanted -= 1

    async def take(self, app: str, replacing: str | None = None) -> bool:
        """Tries to take ``app``'s lease (``replacing``: a dead holder's); True when taken."""
        sent = self.clock()
        lease = await self._call(
            self.store.acquire(
                app,
                self.owner,
                host=self.identity.host,
                local_id=self.identity.local_id,
                ttl_s=self.timing.lease_s,
                replacing=replacing,
            )
        )
        if lease is None:
            return False
        wait = COOLDOWN_S if replacing is not None else 0.0
        self._held[app] = _Held(sent + self.timing.lease_s, lease.acquired_at, self.clock() + wait)
        log.info("acquired the lease of app %s", app, extra={"app_key": app})
        if self.hooks is not None:
            if wait:
                # Not in this round: renewals of the other apps must not wait for it.
                task = asyncio.create_task(self._start_later(app, wait), name=f"start:{app}")
                self._starting.add(task)
                task.add_done_callback(self._starting.discard)
            else:
                await self.hooks.start_app(app)
        return True

    async def _start_later(self, app: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if app in self._held and not self._closing and self.hooks is not None:
            await self.hooks.start_app(app)

    def _begin_release(self, app: str) -> None:
        log.info("handing app %s over (fair share is %d)", app, self.target)
        self._releasing[app] = asyncio.create_task(self._release(app), name=f"release:{app}")

    async def _release(self, app: str) -> None:
        try:
            if self.hooks is not None:
                await self.hooks.stop_app(app, graceful=True)
            if self._held.pop(app, None) is not None:
                await self._call(self.store.release([app], self.owner, cooldown_s=COOLDOWN_S))
                log.info("released the lease of app %s", app, extra={"app_key": app})
        except DATABASE_ERRORS as exc:
            log.warning("could not release app %s (its lease expires on its own): %s", app, exc)
        finally:
            self._releasing.pop(app, None)

    async def _lose(self, app: str, why: str) -> None:
        if self._held.pop(app, None) is None:
            return
        self.lost += 1
        log.error("lost the lease of app %s: %s; stopping its loops", app, why)
        if self.hooks is not None and app not in self._releasing:
            await self.hooks.stop_app(app, graceful=False)
