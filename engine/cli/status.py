"""``temu-sync status [--json]``: per shop and stream the cursor, lag, last success and last
error; each shop's access token; the cluster; the outbox. Reads only (never migrates): on a
schema not created yet every configured stream shows as never synced."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.cli.commands import open_runtime, print_json_summary
from engine.config import Settings
from engine.config.settings import ShopSettings
from engine.errors import ExitCode
from engine.reconcile.executor import BLOCKED
from engine.store.leases import DaemonRow, Lease, LeaseStore
from engine.store.migrate import load_migrations, pending_migrations
from engine.store.reconcile_store import ReconcileStore
from engine.store.token_checks import TokenCheck, TokenCheckFailure, TokenChecks
from engine.sync.tokens import expires_soon, status_fields
from engine.temu.api import TemuShopApi
from engine.temu.token_info import needed_scopes

__all__ = ["cmd_status"]


def _ago(ts: datetime | None, now: float) -> str:
    if ts is None:
        return "-"
    return f"{int(now - ts.timestamp())}s ago"


async def cmd_status(settings: Settings, *, as_json: bool) -> int:
    # `status` only reads: it never creates or upgrades the schema (that is `migrate`'s job,
    # and a read-only role must be able to run it). It says when a migration is pending.
    rt = await open_runtime(settings, apply_migrations=False)
    try:
        pending = await pending_migrations(rt.pool, settings.database.schema)
        if pending and len(pending) == len(load_migrations()):
            # Nothing was ever synced here: every configured stream is shown as such (no
            # table to read; creating them is for `migrate` or the first sync command).
            print(
                f"schema {settings.database.schema!r} does not exist yet: nothing synced "
                "(`temu-sync migrate` or the first sync creates it)",
                file=sys.stderr,
            )
            return _report(
                settings,
                as_json=as_json,
                rows=_never_synced(settings.shops, settings.sync.streams),
                outbox=_EMPTY_OUTBOX
                | {"blocked": 0, "blocked_latest_error": None, "blocked_latest_key": None},
                rejected=[],
                tokens={},
                refusals={},
                apps=[],
                daemons=[],
            )
        if pending:
            print(
                f"warning: the schema needs `temu-sync migrate` ({len(pending)} pending: "
                f"{', '.join(pending)}); figures below may be incomplete",
                file=sys.stderr,
            )
        tokens, refusals = await _token_state(rt.pool, rt.shop_apis) if not pending else ({}, {})
        rows = await rt.store.sync_status([s.id for s in settings.shops], settings.sync.streams)
        outbox = await rt.store.outbox_summary()
        rejected = await rt.store.rejected_counts() if not pending else []
        blocked, blocked_error, blocked_key = await ReconcileStore(rt.pool).blocked(BLOCKED)
        outbox.update(
            blocked=blocked, blocked_latest_error=blocked_error, blocked_latest_key=blocked_key
        )
        leases = LeaseStore(rt.pool)
        apps, daemons = await leases.leases(), await leases.daemons()
    finally:
        await rt.close()
    return _report(
        settings,
        as_json=as_json,
        rows=rows,
        outbox=outbox,
        rejected=rejected,
        tokens=tokens,
        refusals=refusals,
        apps=apps,
        daemons=daemons,
    )


_EMPTY_OUTBOX: dict[str, Any] = {
    **dict.fromkeys(("pending", "running", "done", "dead"), 0),
    **dict.fromkeys(("oldest_dead_error", "oldest_dead_at", "oldest_dead_kind", "oldest_dead_key")),
}


def _never_synced(shops: Sequence[ShopSettings], streams: Sequence[str]) -> list[dict[str, Any]]:
    """What ``sync_status`` answers for a configured stream with no sync_state row yet."""
    return [
        {
            "shop_id": shop.id,
            "stream": stream,
            "kind": "incremental",
            "position": None,
            "cursor": None,
            "last_success_at": None,
            "last_error": None,
            "last_error_at": None,
            "updated_at": None,
            "last_error_class": None,
            "failures_in_row": 0,
            "retry_after": None,
            "inconsistent_windows": 0,
            "lag_s": None,
            "failing": False,
            "configured": True,
        }
        for shop in sorted(shops, key=lambda s: s.id)
        for stream in sorted(streams)
    ]


def _report(
    settings: Settings,
    *,
    as_json: bool,
    rows: list[dict[str, Any]],
    outbox: dict[str, Any],
    rejected: list[dict[str, Any]],
    tokens: dict[str, TokenCheck],
    refusals: dict[str, TokenCheckFailure],
    apps: list[Lease],
    daemons: list[DaemonRow],
) -> int:
    needed = needed_scopes(
        orders=settings.sync.orders,
        returns=settings.sync.returns,
        reconciler=settings.reconciler.enabled,
        webhooks=settings.webhooks.enabled,
    )
    now = time.time()
    if as_json:

        def conv(v: Any) -> Any:
            return v.isoformat() if isinstance(v, datetime) else v

        doc = {
            # Which process owns which app (several daemons may share the database).
            "apps": [{k: conv(v) for k, v in asdict(lease).items()} for lease in apps],
            "daemons": [{k: conv(v) for k, v in asdict(d).items()} for d in daemons],
            "streams": [
                {
                    **{k: conv(v) for k, v in row.items()},
                    "lag_s": (now - row["cursor"].timestamp()) if row.get("cursor") else None,
                }
                for row in rows
            ],
            "outbox": {k: conv(v) for k, v in outbox.items()},
            # interface.md: records set aside in rejected_records, per shop and stream.
            "rejected": [{k: conv(v) for k, v in r.items()} for r in rejected],
            # interface.md "Access tokens": null when never checked.
            # token_error: Temu's refusal of the configured token (e.g. 3000034 expired), the
            # last check of it, else null.
            "shops": [
                {
                    "id": s.id,
                    **status_fields(tokens.get(s.id), needed),
                    "token_error": refusals[s.id].error if s.id in refusals else None,
                }
                for s in settings.shops
            ],
        }
        print_json_summary(doc)
        return ExitCode.OK
    print(
        f"{'shop':<16} {'stream':<8} {'kind':<28} {'cursor':<26} {'lag':>10}  "
        f"{'last success':<14} last error"
    )
    for row in rows:
        cursor = row.get("cursor")
        lag = f"{int(now - cursor.timestamp())}s" if cursor else "-"
        print(
            f"{row['shop_id']:<16} {row['stream']:<8} {row['kind']:<28} "
            f"{cursor.isoformat() if cursor else '-':<26} {lag:>10}  "
            f"{_ago(row.get('last_success_at'), now):<14} {_error_cell(row)}"
        )
    for row in rows:
        if row.get("inconsistent_windows"):
            print(
                f"shop {row['shop_id']} {row['stream']} {row['kind']}: "
                f"{row['inconsistent_windows']} one-second window(s) accepted although Temu "
                "never listed them consistently (records may be missing)"
            )
    for r in rejected:
        print(
            f"shop {r['shop_id']} {r['stream']}: {r['records']} record(s) set aside in "
            f"rejected_records (last seen {_ago(r['last_seen_at'], now)})"
        )
    _print_tokens(settings, tokens, refusals, needed)
    _print_cluster(apps, daemons, now)
    print(_outbox_line(outbox))
    if outbox.get("oldest_dead_error") is not None:
        print(
            f"  oldest dead: {outbox.get('oldest_dead_kind')} {outbox.get('oldest_dead_key')} "
            f"({_ago(outbox.get('oldest_dead_at'), now)}): {outbox['oldest_dead_error']}"
        )
    if outbox["blocked"]:
        # Pending, but no attempt will succeed until the operator fixes the configuration.
        print(
            f"  {outbox['blocked']} pending task(s) blocked, latest "
            f"{outbox['blocked_latest_key']}: {outbox['blocked_latest_error']}"
        )
    return ExitCode.OK


async def _token_state(
    pool: asyncpg.Pool, apis: Mapping[str, TemuShopApi]
) -> tuple[dict[str, TokenCheck], dict[str, TokenCheckFailure]]:
    """The last check of each shop's CONFIGURED token (a check of a token since replaced in
    config.toml says nothing of the new one), and its refusal when that came after."""
    store = TokenChecks(pool)

    def configured(shop_id: str, fingerprint: str) -> bool:
        api = apis.get(shop_id)
        return api is not None and api.token_fingerprint == fingerprint

    checks = {c.shop_id: c for c in await store.all() if configured(c.shop_id, c.token_sha256)}
    refusals: dict[str, TokenCheckFailure] = {}
    for failure in await store.failures():
        if not configured(failure.shop_id, failure.token_sha256):
            continue
        check = checks.get(failure.shop_id)
        if check is None or failure.failed_at > check.checked_at:
            refusals[failure.shop_id] = failure
    return checks, refusals


def _print_tokens(
    settings: Settings,
    tokens: dict[str, TokenCheck],
    refusals: dict[str, TokenCheckFailure],
    needed: frozenset[str],
) -> None:
    today = datetime.now(UTC)
    for shop in settings.shops:
        refusal = refusals.get(shop.id)
        if refusal is not None:
            print(
                f"shop {shop.id}: Temu refused the access token "
                f"({refusal.failed_at.isoformat(timespec='seconds')}): {refusal.error}"
            )
        check = tokens.get(shop.id)
        fields = status_fields(check, needed)
        if check is None:
            continue
        if fields["token_missing_scopes"]:
            print(
                f"shop {shop.id}: the access token lacks "
                f"{', '.join(fields['token_missing_scopes'])}"
            )
        if expires_soon(check, today):
            expiry = fields["token_expires_at"]
            print(f"warning: shop {shop.id}: the access token expires at {expiry}")


def _print_cluster(apps: list[Lease], daemons: list[DaemonRow], now: float) -> None:
    for lease in apps:
        state = "owned by" if lease.live else "free (lease expired), last owner"
        print(
            f"app {lease.app_key}: {state} {lease.owner} since "
            f"{lease.acquired_at.isoformat(timespec='seconds')} "
            f"(renewed {_ago(lease.heartbeat_at, now)})"
        )
    for d in daemons:
        http = f", http {d.listen}" if d.listen else ""
        print(
            f"daemon {d.owner}: {'live' if d.live else 'GONE'}, started "
            f"{d.started_at.isoformat(timespec='seconds')}, heartbeat "
            f"{_ago(d.heartbeat_at, now)}{http}"
        )


def _error_cell(row: dict[str, Any]) -> str:
    error = row.get("last_error")
    if not row.get("configured", True):
        return f"(not in config) {error or ''}".rstrip()
    if not error:
        synced = row.get("position") is not None or row.get("last_success_at") is not None
        return "" if synced else "never synced"
    # An error older than the last success is history; a current one needs attention.
    if row.get("retry_after") is not None:
        return (
            f"FAILING, backing off until {row['retry_after'].isoformat(timespec='seconds')} "
            f"({row.get('last_error_class')}, {row.get('failures_in_row')} failed passes in a "
            f"row): {error}"
        )
    return f"FAILING: {error}" if row.get("failing") else f"(earlier) {error}"


def _outbox_line(outbox: dict[str, Any]) -> str:
    counts = ", ".join(f"{outbox.get(s, 0)} {s}" for s in ("pending", "running", "done", "dead"))
    return f"outbox: {counts}"
