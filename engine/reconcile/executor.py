"""Runs due outbox tasks through their handlers and books each outcome onto the outbox.

Claims go through ``Store.claim`` (FOR UPDATE SKIP LOCKED with a lease), so several workers and
machines split the work and a task left running by a dead worker is taken again once its lease
expires. One pass runs each task at most once: a task that comes due again during the pass
(a zero-delay wait or retry) is handed back untouched for the next pass.

A handler's exception becomes an outcome by what it says (``outcome_of_error``): retryable
errors are retried with backoff, errors that would repeat park the task at once, and
configuration problems (shop or app credentials, OC auth) make it wait without using attempts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import describe
from engine.logs import redact
from engine.oc.errors import OCAuthError, OCError
from engine.reconcile.tasks import Done, Handler, LeaseLost, Outcome, Park, Retry, Wait
from engine.store.outbox import Task
from engine.store.reconcile_store import ReconcileStore
from engine.store.store import Store
from engine.temu.errors import AppNotOwned, TemuError, TimestampRejected

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000
# A configuration problem (a revoked shop token, a bad app key or secret, OC refusing our
# credentials, a skewed host clock) is no fault of the task: it looks again this often without
# using up attempts, its note (last_error) starting with BLOCKED so that `status` shows it.
CONFIG_WAIT_S = 900.0
BLOCKED = "blocked by configuration: "


@dataclass
class ExecStats:
    done: int = 0
    retried: int = 0
    waiting: int = 0
    dead: int = 0
    lost: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    # Shops whose tasks Temu refused for the shop's token or the app's credentials, or that
    # a configuration problem blocked: their work could not be done this pass (a one-shot
    # run names them in shops_failed).
    shops_failed: set[str] = field(default_factory=set)


class _TaskLease:
    def __init__(self, recon: ReconcileStore, task: Task) -> None:
        self._recon = recon
        self._task = task

    async def save_progress(self, patch: dict[str, Any], *, cover_s: float) -> None:
        ok = await self._recon.patch_running(
            self._task.id, patch, owner=self._task.owner, cover_s=cover_s
        )
        if not ok:
            raise LeaseLost(f"task {self._task.id} is no longer leased by {self._task.owner}")


def outcome_of_error(
    exc: Exception, *, config_wait_s: float = CONFIG_WAIT_S
) -> Retry | Wait | Park:
    """What a handler's exception means for its task (temu-api.md's error table)."""
    reason = describe(exc)
    if isinstance(exc, AppNotOwned):
        # Another daemon holds the app now and will take the task: hand it back at once.
        return Wait(reason, 0.0)
    if isinstance(exc, TemuError):
        if exc.scope != "call" or isinstance(exc, TimestampRejected):
            return Wait(BLOCKED + reason, config_wait_s)
        # Bad params, a refused state, a proxy's 4xx: the same call would fail the same way.
        return Retry(reason) if exc.retryable else Park(reason)
    if isinstance(exc, OCAuthError):
        return Wait(BLOCKED + reason, config_wait_s)
    if isinstance(exc, OCError):
        return Retry(reason) if exc.retryable else Park(reason)
    # Anything else (database hiccup, a bug) may pass: retried up to max_attempts.
    return Retry(reason)


def refuses_shop(exc: Exception) -> bool:
    """A Temu refusal of the shop's token (3000030-34...) or of its app's credentials: every
    call for the shop would fail the same way. Not a lease handed to another daemon."""
    return (
        isinstance(exc, TemuError)
        and exc.scope in ("shop", "app")
        and not isinstance(exc, AppNotOwned)
    )


class Executor:
    def __init__(
        self,
        *,
        store: Store,
        recon: ReconcileStore,
        handlers: Mapping[str, Handler],
        owner: str,
        lease_s: float,
        max_attempts: int,
        backoff: Callable[[int], float],
        batch: int = 50,
        concurrency: int = 8,
        config_wait_s: float = CONFIG_WAIT_S,
    ) -> None:
        self._store = store
        self._recon = recon
        self._handlers = dict(handlers)
        self._owner = owner
        self._lease_s = lease_s
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._batch = batch
        self._sem = asyncio.Semaphore(concurrency)
        self._config_wait_s = config_wait_s

    @property
    def kinds(self) -> list[str]:
        return sorted(self._handlers)

    def handler(self, kind: str) -> Handler:
        return self._handlers[kind]

    async def run_due(self, progress: Callable[[], None] | None = None) -> ExecStats:
        stats = ExecStats()
        if not self._handlers:
            return stats
        seen: set[int] = set()
        while True:
            tasks = await self._store.claim(
                self.kinds, limit=self._batch, lease_s=self._lease_s, owner=self._owner
            )
            fresh = [t for t in tasks if t.id not in seen]
            for t in tasks:
                if t.id in seen:
                    # Handed back untouched (attempt undone) for the next pass.
                    await self._recon.defer(t.id, t.last_error, delay_s=0.0, owner=self._owner)
            if not fresh:
                return stats
            seen.update(t.id for t in fresh)
            await asyncio.gather(*(self._guarded(t, stats, progress) for t in fresh))

    async def _guarded(
        self, task: Task, stats: ExecStats, progress: Callable[[], None] | None
    ) -> None:
        async with self._sem:
            await self.run_task(task, stats)
        # Each booked task is progress: one slow task (a silent OC) must not make the pass
        # look stuck while the others finish, and get it cancelled with them unbooked.
        if progress is not None:
            progress()

    async def run_task(self, task: Task, stats: ExecStats) -> None:
        handler = self._handlers[task.kind]
        try:
            outcome: Outcome = await handler.run(task, _TaskLease(self._recon, task))
        except LeaseLost as exc:
            stats.lost += 1
            log.warning("reconciler task %s abandoned: %s", task.dedupe_key, exc)
            return
        except Exception as exc:
            failed = outcome_of_error(exc, config_wait_s=self._config_wait_s)
            log.log(
                logging.ERROR if failed.reason.startswith(BLOCKED) else logging.WARNING,
                "reconciler task %s failed (attempt %d): %s",
                task.dedupe_key,
                task.attempts,
                redact(failed.reason),
            )
            outcome = failed
            # A refused token or app, or any configuration block (OC refusing our
            # credentials, a skewed clock): the shop's work cannot be done until someone
            # fixes it, so a one-shot run must not exit 0 over it.
            blocked = failed.reason.startswith(BLOCKED)
            if task.shop_id is not None and (blocked or refuses_shop(exc)):
                stats.shops_failed.add(task.shop_id)
        await self._book(task, outcome, stats)
        stats.by_kind[task.kind] = stats.by_kind.get(task.kind, 0) + 1

    async def _book(self, task: Task, outcome: Outcome, stats: ExecStats) -> None:
        owner = self._owner
        if isinstance(outcome, Done):
            if await self._store.complete(task.id, outcome.result, owner=owner):
                stats.done += 1
            else:
                stats.lost += 1
            return
        if isinstance(outcome, Wait):
            await self._recon.defer(
                task.id,
                redact(outcome.reason)[:MAX_ERROR_CHARS],
                delay_s=outcome.delay_s,
                owner=owner,
                patch=outcome.patch,
            )
            stats.waiting += 1
            return
        reason = redact(outcome.reason)[:MAX_ERROR_CHARS]
        # Park: max_attempts 0 makes the outbox's fail() park it now, whatever its count.
        limit = 0 if isinstance(outcome, Park) else self._max_attempts
        state = await self._store.fail(
            task.id,
            reason,
            max_attempts=limit,
            backoff_s=max(
                self._backoff(task.attempts),
                outcome.delay_s if isinstance(outcome, Retry) else 0.0,
            ),
            owner=owner,
        )
        if state == "dead":
            stats.dead += 1
            log.error("reconciler task %s parked as dead: %s", task.dedupe_key, reason)
        elif state is None:
            stats.lost += 1
        else:
            stats.retried += 1
