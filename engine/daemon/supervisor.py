"""Keeps the daemon's long-lived tasks running: starts each, restarts it with backoff when it
fails, and stops them all within a deadline.

In the spirit of pgqueuer's task manager: no task is fire-and-forget, every failure is logged
with the task's name, and shutdown awaits everything it started. Nothing here knows what the
tasks do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from engine.logs import log_context
from engine.retry import Backoff, sleep_or_stop

__all__ = ["Supervisor", "TaskFn"]

log = logging.getLogger(__name__)

# A supervised task: runs until ``stop`` is set, then returns.
TaskFn = Callable[[asyncio.Event], Awaitable[None]]
CrashHook = Callable[[str, BaseException], None]


# Restarts of a crashed task: from a second up to ten minutes.
_RESTART = Backoff(base=1.0, cap=600.0)


class Supervisor:
    """Runs named tasks until ``stop`` is set; restarts a task that raises or returns early."""

    def __init__(
        self,
        stop: asyncio.Event,
        *,
        restart: Backoff = _RESTART,
        on_crash: CrashHook | None = None,
        healthy_after_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stop = stop
        self._restart = restart
        self._on_crash = on_crash
        # A task that ran this long before failing again starts its backoff from the beginning.
        self._healthy_after = healthy_after_s
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._crashes: dict[str, int] = {}

    @property
    def names(self) -> list[str]:
        return list(self._tasks)

    def crashes(self, name: str) -> int:
        """How many times ``name`` failed since it was started (restarts included)."""
        return self._crashes.get(name, 0)

    def alive(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    def start(self, name: str, fn: TaskFn, **context: str) -> None:
        """Starts ``fn(stop)`` as task ``name``; ``context`` goes on every log line it emits."""
        if name in self._tasks:
            raise ValueError(f"task {name!r} already started")
        # The context is set before create_task so the task's copied contextvars carry it.
        with log_context(task=name, **context):
            self._tasks[name] = asyncio.create_task(self._keep_running(name, fn), name=name)

    async def _keep_running(self, name: str, fn: TaskFn) -> None:
        failures = 0
        while not self._stop.is_set():
            started = self._clock()
            try:
                await fn(self._stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                problem: BaseException = exc
                log.error("task %s failed: %s: %s", name, type(exc).__name__, exc, exc_info=True)
            else:
                if self._stop.is_set():
                    return
                problem = RuntimeError(f"task {name} returned before shutdown")
                log.error("task %s returned before shutdown", name)
            failures = 1 if self._clock() - started >= self._healthy_after else failures + 1
            self._crashes[name] = self._crashes.get(name, 0) + 1
            if self._on_crash is not None:
                try:
                    self._on_crash(name, problem)
                except Exception:
                    log.exception("crash hook failed for task %s", name)
            delay = self._restart.delay(failures)
            log.info("restarting task %s in %.1f s (failure %d in a row)", name, delay, failures)
            if await sleep_or_stop(self._stop, delay):
                return

    async def shutdown(self, *, grace_s: float, cancel_timeout_s: float) -> list[str]:
        """Sets ``stop``, gives tasks ``grace_s`` to finish what they are doing, cancels the
        rest and waits up to ``cancel_timeout_s`` for them. Returns the names of the tasks
        that had to be cancelled (their in-flight work was rolled back, not committed)."""
        self._stop.set()
        tasks = dict(self._tasks)
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks.values(), timeout=grace_s)
        cancelled = sorted(n for n, t in tasks.items() if t in pending)
        for task in pending:
            task.cancel()
        if pending:
            _, stuck = await asyncio.wait(pending, timeout=cancel_timeout_s)
            for name, task in tasks.items():
                if task in stuck:
                    log.warning("task %s did not stop within %.1f s", name, cancel_timeout_s)
        for name, task in tasks.items():
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("task %s ended with %r", name, task.exception())
        return cancelled
