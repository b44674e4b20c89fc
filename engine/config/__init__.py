"""Typed, frozen settings loaded from config.toml.

This is the only module that reads the environment for settings (``*_env`` keys,
``TEMU_SYNC_CONFIG``, ``CREDENTIALS_DIRECTORY``); logs.py reads ``JOURNAL_STREAM`` and the
daemon systemd's notify variables.
Every error names the file and the dotted key so an operator can fix it without reading code.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from engine.config.reader import (
    ConfigError,
    Reader,
    Secret,
    array_of_tables,
    table,
)

__all__ = [
    "LOGISTIC_MODES",
    "REGION_URLS",
    "AppSettings",
    "ClusterSettings",
    "ConfigError",
    "DatabaseSettings",
    "HttpSettings",
    "OrangeConnexSettings",
    "ReconcilerSettings",
    "RetentionSettings",
    "Secret",
    "Settings",
    "ShopSettings",
    "SyncSettings",
    "WebhooksSettings",
    "config_path",
    "database_passwords",
    "load_config",
    "parse_config",
]

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


# Per-app defaults (an app needs its key and secret, so no whole default instance).
_APP = AppSettings(app_key="", app_secret=Secret(""))


def parse_config(
    doc: Mapping[str, Any], source: str, env: Mapping[str, str], base_dir: Path | None = None
) -> Settings:
    known = {f.name for f in fields(Settings)} - {"source"}
    extra = sorted(set(doc) - known)
    if extra:
        raise ConfigError(source, extra[0], "unknown key")

    r = Reader(source, "database", table(source, doc, "database"), env)
    dd = DatabaseSettings()
    data_dir = Path(r.string("data_dir", str(dd.data_dir)))
    if base_dir is not None and not data_dir.is_absolute():
        data_dir = base_dir / data_dir
    schema = r.string("schema", dd.schema)
    if not schema.isidentifier():
        raise r.err("schema", f"must be a plain identifier, got {schema!r}")
    database = DatabaseSettings(
        # Not a secret in interface.md, but a libpq URL may carry a password: the _env and
        # _file forms keep it out of config.toml (systemd LoadCredential=).
        url=r.secret("url", required=False).get(),
        schema=schema,
        data_dir=data_dir,
        pool_min=r.integer("pool_min", dd.pool_min, 1),
        pool_max=r.integer("pool_max", dd.pool_max, MIN_POOL),
        statement_timeout_s=r.number("statement_timeout_s", dd.statement_timeout_s),
        lock_timeout_s=r.number("lock_timeout_s", dd.lock_timeout_s),
        connect_timeout_s=r.number("connect_timeout_s", dd.connect_timeout_s),
    )
    if database.pool_min > database.pool_max:
        raise r.err(
            "pool_min", f"must be <= pool_max ({database.pool_max}), got {database.pool_min}"
        )
    if database.lock_timeout_s > database.statement_timeout_s:
        raise r.err("lock_timeout_s", "must be <= statement_timeout_s")
    r.finish()

    apps: list[AppSettings] = []
    for i, t in enumerate(array_of_tables(source, doc, "apps")):
        r = Reader(source, f"apps[{i}]", t, env)
        app_key = r.string("app_key")
        if not app_key:
            raise r.err("app_key", "must not be empty")
        if any(a.app_key == app_key for a in apps):
            raise r.err("app_key", f"duplicate app_key {app_key!r}")
        region = r.choice("region", _APP.region, tuple(REGION_URLS))
        apps.append(
            AppSettings(
                app_key=app_key,
                app_secret=r.secret("app_secret", required=True),
                region=region,
                base_url=r.string("base_url", _APP.base_url),
                qps=r.number("qps", _APP.qps),
                timeout_s=r.number("timeout_s", _APP.timeout_s),
                max_attempts=r.integer("max_attempts", _APP.max_attempts, 1),
            )
        )
        r.finish()

    shops: list[ShopSettings] = []
    for i, t in enumerate(array_of_tables(source, doc, "shops")):
        r = Reader(source, f"shops[{i}]", t, env)
        shop_id = r.string("id")
        if not shop_id:
            raise r.err("id", "must not be empty")
        if any(s.id == shop_id for s in shops):
            raise r.err("id", f"duplicate shop id {shop_id!r}")
        app_key = r.string("app_key")
        if not any(a.app_key == app_key for a in apps):
            raise r.err("app_key", f"names no [[apps]] entry (app_key {app_key!r})")
        shops.append(
            ShopSettings(
                id=shop_id, app_key=app_key, access_token=r.secret("access_token", required=True)
            )
        )
        r.finish()

    r = Reader(source, "sync", table(source, doc, "sync"), env)
    ds = SyncSettings()
    sync = SyncSettings(
        orders=r.boolean("orders", ds.orders),
        returns=r.boolean("returns", ds.returns),
        start=r.timestamp("start", ds.start),
        poll_interval_s=r.number("poll_interval_s", ds.poll_interval_s),
        overlap_s=r.integer("overlap_s", ds.overlap_s),
        safety_lag_s=r.integer("safety_lag_s", ds.safety_lag_s),
        orders_page_size=r.integer("orders_page_size", ds.orders_page_size, 1),
        returns_page_size=r.integer("returns_page_size", ds.returns_page_size, 1),
        backfill_window_s=r.integer("backfill_window_s", ds.backfill_window_s, 60),
    )
    if sync.orders_page_size > 100:
        raise r.err("orders_page_size", "Temu allows at most 100")
    if sync.returns_page_size > 200:
        raise r.err("returns_page_size", "Temu allows at most 200")
    r.finish()

    r = Reader(source, "reconciler", table(source, doc, "reconciler"), env)
    dr = ReconcilerSettings()
    reconciler = ReconcilerSettings(
        enabled=r.boolean("enabled", dr.enabled),
        interval_s=r.number("interval_s", dr.interval_s),
        max_attempts=r.integer("max_attempts", dr.max_attempts, 1),
        logistic_mode=r.choice("logistic_mode", dr.logistic_mode, LOGISTIC_MODES),
        lease_s=r.integer("lease_s", dr.lease_s, 5),
        rma_wait_polls=r.integer("rma_wait_polls", dr.rma_wait_polls, 0),
    )
    r.finish()

    r = Reader(source, "orange_connex", table(source, doc, "orange_connex"), env)
    do = OrangeConnexSettings()
    oc_enabled = r.boolean("enabled", do.enabled)
    orange_connex = OrangeConnexSettings(
        enabled=oc_enabled,
        base_url=r.string("base_url", do.base_url),
        oauth_base_url=r.string("oauth_base_url", do.oauth_base_url),
        client_id=r.string("client_id", do.client_id if not oc_enabled else None),
        client_key=r.secret("client_key", required=False),
        refresh_token=r.secret("refresh_token", required=oc_enabled),
        qps=r.number("qps", do.qps),
        timeout_s=r.number("timeout_s", do.timeout_s),
    )
    r.finish()

    r = Reader(source, "http", table(source, doc, "http"), env)
    dh = HttpSettings()
    listen = r.string("listen", dh.listen)
    problem = listen_problem(listen)
    if problem:
        raise r.err("listen", problem)
    http = HttpSettings(
        listen=listen,
        admin_token=r.secret("admin_token", required=False),
        max_body_bytes=r.integer("max_body_bytes", dh.max_body_bytes, 1024),
    )
    r.finish()

    r = Reader(source, "webhooks", table(source, doc, "webhooks"), env)
    dw = WebhooksSettings()
    webhooks = WebhooksSettings(
        enabled=r.boolean("enabled", dw.enabled),
        listen=r.string("listen", dw.listen),
        path=r.string("path", dw.path),
        events=r.strings("events", dw.events),
    )
    problem = listen_problem(webhooks.listen)
    if problem:
        raise r.err("listen", problem)
    if webhooks.enabled and not webhooks.listen:
        raise r.err("listen", "must be set when webhooks are enabled")
    if not webhooks.path.startswith("/"):
        raise r.err("path", f"must start with /, got {webhooks.path!r}")
    if webhooks.enabled and http.listen and webhooks.listen == http.listen:
        raise r.err("listen", "must differ from [http] listen (events get a listener of their own)")
    if len(webhooks.events) > 20:
        raise r.err("events", "Temu takes at most 20 event codes per subscription")
    r.finish()

    r = Reader(source, "cluster", table(source, doc, "cluster"), env)
    cluster = ClusterSettings(lease_s=r.number("lease_s", ClusterSettings().lease_s))
    if cluster.lease_s < 3:
        # Below that the margin kept between two owners (> 1 s, the rate limit's window)
        # would eat the whole lease.
        raise r.err("lease_s", f"must be >= 3, got {cluster.lease_s:g}")
    r.finish()

    r = Reader(source, "retention", table(source, doc, "retention"), env)
    d = RetentionSettings()
    retention = RetentionSettings(
        enabled=r.boolean("enabled", d.enabled),
        interval_s=r.number("interval_s", d.interval_s),
        changes_days=r.integer("changes_days", d.changes_days),
        outbox_done_days=r.integer("outbox_done_days", d.outbox_done_days),
        outbox_dead_days=r.integer("outbox_dead_days", d.outbox_dead_days),
        webhook_events_days=r.integer("webhook_events_days", d.webhook_events_days),
        rejected_records_days=r.integer("rejected_records_days", d.rejected_records_days),
        batch_rows=r.integer("batch_rows", d.batch_rows, 100),
        changes_partition_rows=r.integer(
            "changes_partition_rows", d.changes_partition_rows, 10_000
        ),
    )
    r.finish()

    return Settings(
        database=database,
        apps=tuple(apps),
        shops=tuple(shops),
        sync=sync,
        reconciler=reconciler,
        orange_connex=orange_connex,
        http=http,
        webhooks=webhooks,
        cluster=cluster,
        retention=retention,
        source=source,
    )


def config_path(cli_path: str | None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(cli_path or env.get("TEMU_SYNC_CONFIG") or "config.toml")


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Settings:
    """Reads and validates ``path``; raises ConfigError naming the key."""
    env = os.environ if env is None else env
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, "(file)", "config file not found") from None
    except OSError as exc:
        raise ConfigError(source, "(file)", f"cannot read: {exc.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "(syntax)", f"not valid TOML: {exc}") from None
    return parse_config(doc, source, env, base_dir=path.parent.resolve())
