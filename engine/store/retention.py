"""Retention: bounded growth of `changes`, `outbox` and the tables other features add.

- `changes` is partitioned by id range (``sql/0008_changes_partitioned.sql``): a partition
  whose rows are all older than the cutoff is dropped whole; what remains older than the
  cutoff (the oldest live partition, the default partition, or a table not converted yet) is
  deleted from the oldest id up, one batch per transaction.
- Rows the reconciler's planner has not read yet (ids above the lowest ``reconciler_cursor``)
  are never removed; the planner never reads a row by a remembered id, only ``id > cursor``,
  so it cannot depend on a row that is gone.
- Done outbox tasks are the planner's memory of "already queued": one is removed only when
  the planner could not plan it again (see ``retention_outbox_done_count``).
- `rejected_records`, `webhook_events` and `logistics_pending` are pruned when (and only when)
  they exist. A `logistics_pending` row is a return whose reverse logistics Temu could not
  give; read again after every pass up to daily, it would be asked for forever.

Every statement removes at most ``batch_rows`` rows and commits alone; DDL runs under a short
``lock_timeout`` and is simply retried at the next run when the table is busy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.config import RetentionSettings, Settings
from engine.store.pool import quote_ident
from engine.store.queries import default_queries

log = logging.getLogger(__name__)

DAY_S = 86_400.0
NO_HOLD = 2**63 - 1
# Partitions kept ready past the next id (each holds changes_partition_rows ids).
PARTITIONS_AHEAD = 2
# The large-table conversion bounds the old table at next id + this margin, so no id written
# before the swap can break the CHECK; the sequence then jumps to the bound (ids have gaps
# anyway, and bigint leaves room for billions of such jumps).
LEGACY_BOUND_MARGIN = 1_000_000_000


@dataclass(frozen=True)
class RetentionPolicy:
    """Days to keep (0: for ever) and how the work is cut up."""

    changes_days: int = 90
    outbox_done_days: int = 30
    outbox_dead_days: int = 0
    webhook_events_days: int = 7
    rejected_records_days: int = 90
    logistics_pending_days: int = 30
    batch_rows: int = 5000
    # Batches per table per run: one run stays short, the next one goes on.
    max_batches: int = 200
    changes_partition_rows: int = 1_000_000
    # True when the reconciler plans from `changes` (Orange Connex enabled): unplanned rows stay.
    hold_for_planner: bool = True
    lock_timeout_s: float = 1.0

    @classmethod
    def from_settings(cls, s: RetentionSettings, *, planner_reads_changes: bool) -> RetentionPolicy:
        return cls(
            changes_days=s.changes_days,
            outbox_done_days=s.outbox_done_days,
            outbox_dead_days=s.outbox_dead_days,
            webhook_events_days=s.webhook_events_days,
            rejected_records_days=s.rejected_records_days,
            logistics_pending_days=s.logistics_pending_days,
            batch_rows=s.batch_rows,
            changes_partition_rows=s.changes_partition_rows,
            hold_for_planner=planner_reads_changes,
        )


@dataclass(frozen=True)
class ConversionStep:
    step: str  # "bound", "validate", "swap"
    elapsed_s: float
    lock_s: float  # how long `changes` was held in ACCESS EXCLUSIVE mode (0: never)


@dataclass
class PruneReport:
    dry_run: bool
    removed: dict[str, int] = field(default_factory=dict)  # table -> rows (that would be) removed
    dropped_partitions: list[str] = field(default_factory=list)
    created_partitions: list[str] = field(default_factory=list)
    conversion: list[ConversionStep] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # DDL skipped on a lock timeout
    elapsed_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.removed.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed": dict(self.removed),
            "dropped_partitions": list(self.dropped_partitions),
            "created_partitions": list(self.created_partitions),
            "conversion": [s.__dict__ for s in self.conversion],
            "busy": list(self.busy),
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        parts = [f"{n} {t}" for t, n in sorted(self.removed.items())]
        text = f"retention {verb} " + (", ".join(parts) if parts else "nothing")
        if self.dropped_partitions:
            text += f" ({len(self.dropped_partitions)} changes partitions dropped)"
        if self.busy:
            text += f"; busy, retried next run: {', '.join(self.busy)}"
        return text + f" in {self.elapsed_s:.2f} s"


class ChangesLayout:
    """Keeps `changes` partitioned: converts a large plain table and creates partitions ahead."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        queries: Mapping[str, str] | None = None,
        lock_timeout_s: float = 1.0,
        swap_lock_timeout_s: float = 2.0,
    ) -> None:
        self._pool = pool
        self._q = default_queries() if queries is None else queries
        self._lock_timeout = lock_timeout_s
        self._swap_lock_timeout = swap_lock_timeout_s

    async def kind(self) -> str:
        row = await self._pool.fetchrow(self._q["retention_changes_layout"])
        assert row is not None
        return str(row["kind"])

    async def ensure_partitions(self, size: int) -> list[str]:
        async with self._pool.acquire() as conn, conn.transaction():
            await _lock_timeout(conn, self._lock_timeout)
            # A conversion interrupted between its swap and its jump is finished here.
            await conn.fetchval(self._q["retention_changes_jump"])
            made = await conn.fetchval(
                self._q["retention_changes_add_partitions"], size, PARTITIONS_AHEAD
            )
        return list(made or [])

    async def summarize_closed(self) -> int:
        """BRIN-summarizes the partitions no new id can reach; returns the ranges summarized."""
        async with self._pool.acquire() as conn, conn.transaction():
            await _lock_timeout(conn, self._lock_timeout)
            n = await conn.fetchval(self._q["retention_summarize_closed"])
        return int(n or 0)

    async def convert(self, size: int) -> list[ConversionStep]:
        """Runs what is left of the conversion; each step is its own transaction, so an
        interrupted conversion resumes where it stopped. Lock timeouts propagate."""
        steps: list[ConversionStep] = []
        row = await self._pool.fetchrow(self._q["retention_changes_layout"])
        assert row is not None
        if row["kind"] == "p":
            return steps
        bound = row["bound"]
        async with self._pool.acquire() as conn:
            if bound is None:
                t0 = time.monotonic()
                async with conn.transaction():
                    await _lock_timeout(conn, self._lock_timeout)
                    next_id = await conn.fetchval(self._q["retention_changes_next_id"])
                    bound = int(next_id) + LEGACY_BOUND_MARGIN
                    await conn.execute(
                        self._q["retention_changes_add_bound"].format(bound=int(bound))
                    )
                took = time.monotonic() - t0
                steps.append(ConversionStep("bound", took, took))
                log.info("changes conversion: bound %d added", bound)
            if not row["bound_valid"]:
                t0 = time.monotonic()
                await conn.execute(self._q["retention_changes_validate_bound"])
                steps.append(ConversionStep("validate", time.monotonic() - t0, 0.0))
                log.info("changes conversion: bound validated in %.1f s", steps[-1].elapsed_s)
            t0 = time.monotonic()
            async with conn.transaction():
                await _lock_timeout(conn, self._swap_lock_timeout)
                await conn.execute(self._q["retention_changes_lock"])
                locked = time.monotonic()
                await conn.execute(self._q["retention_changes_convert"], int(bound), size)
            done = time.monotonic()
            await conn.fetchval(self._q["retention_changes_jump"])
            steps.append(ConversionStep("swap", done - t0, done - locked))
            log.info("changes partitioned (ACCESS EXCLUSIVE held %.3f s)", done - locked)
        return steps


class Pruner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], float] = time.time,
        queries: Mapping[str, str] | None = None,
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._clock = clock
        self._q = default_queries() if queries is None else queries
        self.layout = ChangesLayout(pool, queries=self._q, lock_timeout_s=policy.lock_timeout_s)

    def _cutoff(self, days: int) -> datetime:
        return datetime.fromtimestamp(self._clock() - days * DAY_S, UTC)

    async def prune(self, *, dry_run: bool = False) -> PruneReport:
        t0 = time.monotonic()
        report = PruneReport(dry_run=dry_run)
        async with self._pool.acquire() as lock:
            if not await lock.fetchval(self._q["retention_try_lock"]):
                report.busy.append("another prune is running")
                return report
            try:
                await self._run(report, dry_run)
            finally:
                await lock.fetchval(self._q["retention_unlock"])
        report.elapsed_s = time.monotonic() - t0
        return report

    async def _run(self, report: PruneReport, dry_run: bool) -> None:
        p = self._policy
        if not dry_run:
            await self._maintain_layout(report)
        if p.changes_days > 0:
            report.removed["changes"] = await self._changes(
                self._cutoff(p.changes_days), report, dry_run
            )
        if p.outbox_done_days > 0:
            report.removed["outbox_done"] = await self._batched(
                "retention_outbox_done", self._cutoff(p.outbox_done_days), dry_run
            )
        if p.outbox_dead_days > 0:
            report.removed["outbox_dead"] = await self._batched(
                "retention_outbox_dead", self._cutoff(p.outbox_dead_days), dry_run
            )
        if p.rejected_records_days > 0 and await self._present("rejected_records", None):
            report.removed["rejected_records"] = await self._batched(
                "retention_rejected", self._cutoff(p.rejected_records_days), dry_run
            )
        if p.webhook_events_days > 0 and await self._present("webhook_events", None):
            # An event not turned into a re-read yet is kept, where the table says so.
            name = (
                "retention_events_processed"
                if await self._present("webhook_events", "processed_at")
                else "retention_events"
            )
            report.removed["webhook_events"] = await self._batched(
                name, self._cutoff(p.webhook_events_days), dry_run
            )
        if p.logistics_pending_days > 0 and await self._present("logistics_pending", None):
            report.removed["logistics_pending"] = await self._batched(
                "retention_logistics_pending", self._cutoff(p.logistics_pending_days), dry_run
            )

    # -- changes --------------------------------------------------------------------------------

    async def _maintain_layout(self, report: PruneReport) -> None:
        try:
            if await self.layout.kind() != "p":
                report.conversion = await self.layout.convert(self._policy.changes_partition_rows)
            report.created_partitions = await self.layout.ensure_partitions(
                self._policy.changes_partition_rows
            )
            await self.layout.summarize_closed()
        except asyncpg.LockNotAvailableError:
            report.busy.append("changes layout")

    async def _hold(self) -> int:
        if not self._policy.hold_for_planner:
            return NO_HOLD
        row = await self._pool.fetchrow(self._q["retention_planner_hold"])
        assert row is not None
        # No cursor yet: the planner has not read anything, so everything is still ahead of it.
        return int(row["hold"]) if row["cursors"] else 0

    async def _changes(self, cutoff: datetime, report: PruneReport, dry_run: bool) -> int:
        hold = await self._hold()
        removed = 0
        after = 0  # the head scan starts past the partitions dropped (or counted as such)
        if await self.layout.kind() == "p":
            next_id = await self._pool.fetchval(self._q["retention_changes_next_id"])
            limit = min(int(next_id), hold + 1) if hold < NO_HOLD else int(next_id)
            parts = await self._pool.fetch(self._q["retention_changes_partitions"], limit)
            for part in parts:
                ident = quote_ident(part["name"])
                row = await self._pool.fetchrow(
                    self._q["retention_partition_expired"].format(part=ident), cutoff
                )
                assert row is not None
                if not row["expired"]:
                    break
                if not dry_run:
                    try:
                        async with self._pool.acquire() as conn, conn.transaction():
                            await _lock_timeout(conn, self._policy.lock_timeout_s)
                            await conn.execute(
                                self._q["retention_drop_partition"].format(part=ident)
                            )
                    except asyncpg.LockNotAvailableError:
                        report.busy.append(part["name"])
                        break
                report.dropped_partitions.append(part["name"])
                removed += int(row["n"])
                after = int(part["upper"]) - 1
        batch = self._policy.batch_rows
        for _ in range(self._policy.max_batches):
            head = await self._pool.fetch(self._q["retention_changes_head"], after, hold, batch)
            old = 0
            while old < len(head) and head[old]["changed_at"] < cutoff:
                old += 1
            if old == 0:
                break
            first, last = int(head[0]["id"]), int(head[old - 1]["id"])
            if dry_run:
                removed += old
            else:
                n = await self._pool.fetchval(
                    self._q["retention_changes_delete_range"], first, last, cutoff
                )
                removed += int(n)
            after = last
            if old < len(head) or len(head) < batch:
                break
        return removed

    # -- other tables ---------------------------------------------------------------------------

    async def _batched(self, name: str, cutoff: datetime, dry_run: bool) -> int:
        batch, most = self._policy.batch_rows, self._policy.max_batches
        if dry_run:
            n = await self._pool.fetchval(self._q[f"{name}_count"], cutoff, batch * most)
            return int(n)
        removed = 0
        for _ in range(most):
            n = int(await self._pool.fetchval(self._q[f"{name}_delete"], cutoff, batch))
            removed += n
            if n < batch:
                break
        return removed

    async def _present(self, table: str, column: str | None) -> bool:
        return bool(await self._pool.fetchval(self._q["retention_table_exists"], table, column))


async def _lock_timeout(conn: Any, seconds: float) -> None:
    # SET LOCAL takes no parameters; the value is a number we format ourselves.
    await conn.execute(f"SET LOCAL lock_timeout = '{int(seconds * 1000)}ms'")


def policy_for(settings: Settings) -> RetentionPolicy:
    # The planner reads `changes` only when Orange Connex is on (reconcile/planner.py).
    return RetentionPolicy.from_settings(
        settings.retention,
        planner_reads_changes=settings.reconciler.enabled and settings.orange_connex.enabled,
    )
