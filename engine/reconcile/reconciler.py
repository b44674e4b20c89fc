"""The reconciler: a pass plans the tasks that changes call for, then runs the due ones."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.reconcile.executor import ExecStats, Executor
from engine.reconcile.planner import Planner, PlanStats

__all__ = ["PassStats", "Reconciler"]


@dataclass
class PassStats:
    plan: PlanStats
    run: ExecStats


class Reconciler:
    def __init__(
        self,
        planner: Planner,
        executor: Executor,
        *,
        before_pass: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.planner = planner
        self.executor = executor
        self._before_pass = before_pass

    async def run_pass(self, progress: Callable[[], None] | None = None) -> PassStats:
        """``progress`` is called after the planning and after each batch of tasks, so a long
        pass over a backlog reads as busy, not stuck. ``before_pass`` (the access-token screen
        of the shops whose tasks may be claimed) runs first."""
        if self._before_pass is not None:
            await self._before_pass()
        plan = await self.planner.plan()
        if progress is not None:
            progress()
        return PassStats(plan, await self.executor.run_due(progress))
