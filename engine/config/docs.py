"""The settings table of the README (key, default, meaning), rendered from the settings
dataclasses so a default is written once; tests/unit/test_config_docs.py checks that the
README holds exactly this table (``UPDATE_README=1`` rewrites it)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.config import (
    AppSettings,
    ClusterSettings,
    DatabaseSettings,
    HttpSettings,
    OrangeConnexSettings,
    ReconcilerSettings,
    RetentionSettings,
    Secret,
    ShopSettings,
    SyncSettings,
    WebhooksSettings,
)

BEGIN = "<!-- settings table: generated from engine/config (tests/unit/test_config_docs.py) -->"
END = "<!-- end of settings table -->"

SECTIONS: list[tuple[str, Any]] = [
    ("database", DatabaseSettings()),
    ("apps", AppSettings(app_key="", app_secret=Secret(""))),
    ("shops", ShopSettings(id="", app_key="", access_token=Secret(""))),
    ("sync", SyncSettings()),
    ("reconciler", ReconcilerSettings()),
    ("orange_connex", OrangeConnexSettings()),
    ("http", HttpSettings()),
    ("webhooks", WebhooksSettings()),
    ("cluster", ClusterSettings()),
    ("retention", RetentionSettings()),
]

MEANINGS: dict[str, str] = {
    "database.url": "libpq URL (secret forms allowed); empty = embedded Postgres under data_dir",
    "database.schema": "Postgres schema holding every table",
    "database.data_dir": "embedded Postgres and other local state (relative to the config file)",
    "database.pool_min": "connections kept open",
    "database.pool_max": "connections at most (at least 4: LISTEN, a token lock, writes)",
    "database.statement_timeout_s": "server-side deadline of one statement; also bounds the "
    "client's wait for an answer (plus 5 s) and the reconciler's look-back (x3)",
    "database.lock_timeout_s": "deadline of one lock wait (a table locked by someone else)",
    "database.connect_timeout_s": "deadline of one connection attempt",
    "apps.app_key": "the Temu app_key (required)",
    "apps.app_secret": "the app secret (required; secret)",
    "apps.region": "us, eu or global: which Temu router",
    "apps.base_url": "overrides the region's router URL (sandbox, simulator)",
    "apps.qps": "the app's request limit per second, shared by its shops",
    "apps.timeout_s": "one Temu request's timeout",
    "apps.max_attempts": (
        "tries of one call before it fails (4000004 answers: three times as many, backing off)"
    ),
    "shops.id": "stable shop name, the key in every table (required)",
    "shops.app_key": "which [[apps]] entry the shop uses (required)",
    "shops.access_token": "the seller's access token (required; secret)",
    "sync.orders": "sync the order list",
    "sync.returns": "sync returns (aftersales)",
    "sync.start": "where a shop's first sync begins",
    "sync.poll_interval_s": "seconds between incremental passes",
    "sync.overlap_s": "each incremental window re-reads this much of the previous one",
    "sync.safety_lag_s": "windows end this far behind now",
    "sync.orders_page_size": "orders per page (Temu allows 100 at most)",
    "sync.returns_page_size": "returns per page (Temu allows 200 at most)",
    "sync.backfill_window_s": "a backfill window's largest span",
    "reconciler.enabled": "run the reconciler",
    "reconciler.interval_s": "seconds between reconciler passes",
    "reconciler.max_attempts": "tries before a task is parked as dead",
    "reconciler.logistic_mode": "dropOff or pickUp: last resort for a label's mode",
    "reconciler.lease_s": "how long a claimed task stays with its worker",
    "reconciler.rma_wait_polls": "looks for an Orange Connex RMA that does not exist yet",
    "orange_connex.enabled": "push tracking and cancellations to Orange Connex",
    "orange_connex.base_url": "Orange Connex API",
    "orange_connex.oauth_base_url": "Orange Connex OAuth host",
    "orange_connex.client_id": "OAuth client id (required when enabled)",
    "orange_connex.client_key": "OAuth client key (secret)",
    "orange_connex.refresh_token": "OAuth refresh token (secret; rotated value kept in Postgres)",
    "orange_connex.qps": "Orange Connex requests per second, per process",
    "orange_connex.timeout_s": "one Orange Connex request's timeout",
    "http.listen": "HOST:PORT of /livez, /healthz, /metrics and the admin API; empty = off",
    "http.admin_token": "bearer token of the admin POST endpoints (secret)",
    "http.max_body_bytes": "largest admin request body",
    "webhooks.enabled": "receive Temu's event POSTs and re-read what they name",
    "webhooks.listen": "HOST:PORT of the event receiver (not the [http] one)",
    "webhooks.path": "the receiver's path",
    "webhooks.events": "event codes subscribed and accepted",
    "cluster.lease_s": "app lease length when several daemons share the database",
    "retention.enabled": "the daemon prunes on a schedule",
    "retention.interval_s": "seconds between prune runs",
    "retention.changes_days": "days `changes` rows are kept (0 = for ever)",
    "retention.outbox_done_days": "days done outbox tasks are kept",
    "retention.outbox_dead_days": "days dead tasks are kept (0 = until handled)",
    "retention.webhook_events_days": "days stored webhook events are kept",
    "retention.rejected_records_days": "days rejected records are kept",
    "retention.logistics_pending_days": (
        "days reverse logistics Temu could not give are asked for again after each pass "
        "(then only when the return changes)"
    ),
    "retention.batch_rows": "rows per delete transaction",
    "retention.changes_partition_rows": "ids per `changes` partition",
}


def _default(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_default(v) for v in value) + "]"
    if isinstance(value, Secret):
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, datetime):
        return f'"{value.isoformat().replace("+00:00", "Z")}"'
    if isinstance(value, Path):
        return f'"{value}"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_rows() -> list[tuple[str, str, str]]:
    rows = []
    for section, instance in SECTIONS:
        for f in dataclasses.fields(instance):
            key = f"{section}.{f.name}"
            rows.append((key, _default(getattr(instance, f.name)), MEANINGS.get(key, "")))
    return rows


def render() -> str:
    lines = [BEGIN, "", "| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | `{d}` | {m} |" for k, d, m in settings_rows()]
    return "\n".join([*lines, "", END])
