"""``temu-sync prune [--dry-run] [--json]``: one retention run, now."""

from __future__ import annotations

from engine.cli.commands import (
    _database_error,
    open_database,
    print_json_summary,
)
from engine.config import Settings
from engine.errors import DATABASE_ERRORS, ExitCode
from engine.store.migrate import migrate
from engine.store.pool import create_pool
from engine.store.retention import Pruner, RetentionPolicy


def policy_for(settings: Settings) -> RetentionPolicy:
    # The planner reads `changes` only when Orange Connex is on (reconcile/planner.py).
    return RetentionPolicy.from_settings(
        settings.retention,
        planner_reads_changes=settings.reconciler.enabled and settings.orange_connex.enabled,
    )


async def cmd_prune(settings: Settings, *, dry_run: bool, as_json: bool) -> int:
    url, embedded = await open_database(settings)
    try:
        try:
            pool = await create_pool(url, settings.database.schema, min_size=1, max_size=2)
        except DATABASE_ERRORS as exc:
            raise _database_error(settings, exc) from None
        try:
            await migrate(pool, settings.database.schema)
            report = await Pruner(pool, policy_for(settings)).prune(dry_run=dry_run)
        except DATABASE_ERRORS as exc:
            raise _database_error(settings, exc) from None
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            embedded.stop()
    print(report.summary())
    if as_json:
        print_json_summary(report.as_dict())
    return ExitCode.OK
