"""The settings as typed, frozen dataclasses: every key's default is written once, here
(the parser in ``parse.py`` reads these defaults; ``docs.py`` renders them for the README)."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from engine.config.reader import (
    Secret,
)

REGION_URLS = {
    "us": "https://openapi-b-us.temu.com/openapi/router",
    "eu": "https://openapi-b-eu.temu.com/openapi/router",
    "global": "https://openapi-b-global.temu.com/openapi/router",
}
LOGISTIC_MODES = ("dropOff", "pickUp")
# The daemon holds connections for good or for long: the reconciler's LISTEN, the OC token
# refresh's advisory lock (its reads and writes on the same connection), a sync write; below
# this a pool can wedge with every connection waiting for another.
MIN_POOL = 4
# How long a label upload's lease is stretched to cover the upload call (engine/reconcile/
# upload_label.py): the app's request timeout and the task lease are checked against it.
LABEL_UPLOAD_COVER_S = 120.0


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = ""
    schema: str = "temu_sync"
    data_dir: Path = Path(".temu-sync")
    pool_min: int = 1
    pool_max: int = 10
    # Deadlines on every wait for Postgres (a lock held by someone else, a stalled server):
    # a page write takes well under a second, so these leave room to spare and still turn a
    # wedged write into a recorded failure that is retried.
    statement_timeout_s: float = 60.0
    lock_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0


@dataclass(frozen=True)
class AppSettings:
    app_key: str
    app_secret: Secret
    region: str = "us"
    base_url: str = ""
    qps: float = 20.0
    timeout_s: float = 30.0
    max_attempts: int = 8

    @property
    def router_url(self) -> str:
        return self.base_url or REGION_URLS[self.region]


@dataclass(frozen=True)
class ShopSettings:
    id: str
    app_key: str
    access_token: Secret


@dataclass(frozen=True)
class SyncSettings:
    orders: bool = True
    returns: bool = True
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    poll_interval_s: float = 30.0
    overlap_s: int = 600
    safety_lag_s: int = 30
    orders_page_size: int = 100
    returns_page_size: int = 200
    backfill_window_s: int = 86400

    @property
    def streams(self) -> list[str]:
        """The streams this configuration syncs, in a fixed order."""
        return [name for name, on in (("orders", self.orders), ("returns", self.returns)) if on]


@dataclass(frozen=True)
class ReconcilerSettings:
    enabled: bool = True
    interval_s: float = 15.0
    max_attempts: int = 10
    logistic_mode: str = "dropOff"
    lease_s: int = 300
    # How many more times an OC cancel/tracking task looks for an RMA that OC does not have yet
    # (the merchant may open it after Temu's event) before it ends as "no_rma". Looks come
    # after 5, 10, 20, 40 minutes, then hourly (engine.retry.rma_wait_schedule): 30 span
    # about a day.
    rma_wait_polls: int = 30


@dataclass(frozen=True)
class OrangeConnexSettings:
    enabled: bool = False
    base_url: str = "https://openapi-hk.orangeconnex.com/openapi"
    oauth_base_url: str = "https://openapi-hk.orangeconnex.com"
    client_id: str = ""
    client_key: Secret = field(default_factory=lambda: Secret(""))
    refresh_token: Secret = field(default_factory=lambda: Secret(""))
    qps: float = 5.0
    timeout_s: float = 30.0


@dataclass(frozen=True)
class WebhooksSettings:
    enabled: bool = False
    listen: str = "127.0.0.1:9188"  # Temu's event POSTs only (an HTTPS proxy in front)
    path: str = "/temu/events"
    events: tuple[str, ...] = (
        "bg_order_status_change_event",
        "bg_aftersales_status_change",
        "bg_cancel_order_status_change",
    )


@dataclass(frozen=True)
class HttpSettings:
    listen: str = "127.0.0.1:9187"
    admin_token: Secret = field(default_factory=lambda: Secret(""))
    max_body_bytes: int = 1_048_576


@dataclass(frozen=True)
class ClusterSettings:
    # Several daemons may share one database: each app is owned by one of them through a
    # lease renewed every lease_s/3; a dead owner's apps are taken over after about lease_s.
    lease_s: float = 30.0


@dataclass(frozen=True)
class RetentionSettings:
    # How long rows are kept, in days; 0 keeps them for ever. Dead tasks wait for an operator.
    enabled: bool = True
    interval_s: float = 600.0
    changes_days: int = 90
    outbox_done_days: int = 30
    outbox_dead_days: int = 0
    webhook_events_days: int = 7
    rejected_records_days: int = 90
    # Reverse logistics Temu could not give for this long are no longer asked for daily (the
    # return changing still brings a read, as for any return).
    logistics_pending_days: int = 30
    # Rows per delete transaction, and ids per `changes` partition.
    batch_rows: int = 5000
    changes_partition_rows: int = 1_000_000


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    apps: tuple[AppSettings, ...] = ()
    shops: tuple[ShopSettings, ...] = ()
    sync: SyncSettings = field(default_factory=SyncSettings)
    reconciler: ReconcilerSettings = field(default_factory=ReconcilerSettings)
    orange_connex: OrangeConnexSettings = field(default_factory=OrangeConnexSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    webhooks: WebhooksSettings = field(default_factory=WebhooksSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    source: str = "<defaults>"

    def app(self, app_key: str) -> AppSettings:
        for a in self.apps:
            if a.app_key == app_key:
                return a
        raise KeyError(app_key)

    def secrets(self) -> list[str]:
        """Every secret value, for the log redaction filter."""
        out = [a.app_secret.get() for a in self.apps]
        out += [s.access_token.get() for s in self.shops]
        oc = self.orange_connex
        out += [oc.client_key.get(), oc.refresh_token.get(), self.http.admin_token.get()]
        out += database_passwords(self.database.url)
        return [s for s in out if s]


_DSN_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def database_passwords(url: str) -> list[str]:
    """The password of a libpq URL (``user:pw@``, ``?password=``) or keyword DSN
    (``password=pw``, quoted or not), for redaction."""
    out: list[str] = []
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.scheme:
            out.append(parts.password or "")
            out += parse_qs(parts.query).get("password", [])
            return [p for p in out if p]
    for m in _DSN_PASSWORD.finditer(url):
        value = m.group(1)
        if value.startswith("'") and value.endswith("'") and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append(value)
    return [p for p in out if p]


def listen_problem(listen: str) -> str | None:
    """Why ``listen`` cannot be bound (checked at load, so a typo exits 2 naming the key
    instead of failing at start), or None. Empty means off."""
    if not listen:
        return None
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        return f"must be HOST:PORT or empty, got {listen!r}"
    if not host.strip("[]"):
        return f"needs a host (e.g. 127.0.0.1:{port}, or 0.0.0.0:{port} for every interface)"
    if not 1 <= int(port) <= 65535:
        return f"port must be 1-65535, got {port}"
    return None
