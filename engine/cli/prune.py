"""``temu-sync prune [--dry-run] [--json]``: one retention run, now."""

from __future__ import annotations

from engine.cli.commands import (
    print_json_summary,
    small_pool,
)
from engine.config import Settings
from engine.errors import ExitCode
from engine.store.migrate import migrate
from engine.store.retention import Pruner, policy_for


async def cmd_prune(settings: Settings, *, dry_run: bool, as_json: bool) -> int:
    async with small_pool(settings) as pool:
        await migrate(pool, settings.database.schema)
        report = await Pruner(pool, policy_for(settings)).prune(dry_run=dry_run)
    print(report.summary())
    if as_json:
        print_json_summary(report.as_dict())
    return ExitCode.OK
