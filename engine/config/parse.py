"""Reads config.toml into ``Settings``: every value checked at load, so whatever would fail
at start exits 2 naming the file and the dotted key instead.

This is the only module that reads the environment for settings (``*_env`` keys,
``TEMU_SYNC_CONFIG``, ``CREDENTIALS_DIRECTORY``); logs.py reads ``JOURNAL_STREAM`` and the
daemon systemd's notify variables.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from engine.config.reader import ConfigError, Reader, Secret, array_of_tables, table
from engine.config.settings import (
    LABEL_UPLOAD_COVER_S,
    LOGISTIC_MODES,
    MIN_POOL,
    REGION_URLS,
    AppSettings,
    ClusterSettings,
    DatabaseSettings,
    HttpSettings,
    OrangeConnexSettings,
    ReconcilerSettings,
    RetentionSettings,
    Settings,
    ShopSettings,
    SyncSettings,
    WebhooksSettings,
    listen_problem,
)

__all__ = ["config_path", "load_config", "parse_config"]


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
    # Not a secret in interface.md, but a libpq URL may carry a password: the _env and _file
    # forms keep it out of config.toml (systemd LoadCredential=).
    url = r.secret("url", required=False).get()
    if url:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in ("postgresql", "postgres"):
            got = f"scheme {scheme!r}" if scheme.isalnum() else "no scheme"
            # Only the scheme is shown: the rest may hold a password.
            raise r.err("url", f"must be a postgresql:// or postgres:// URL (got {got})")
    database = DatabaseSettings(
        url=url,
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
        if apps[-1].timeout_s > LABEL_UPLOAD_COVER_S / 2:
            # A label upload and its one timestamp retry must both fit in the lease cover,
            # else another worker could take the task while the upload is still in flight.
            raise r.err(
                "timeout_s",
                f"must be <= {LABEL_UPLOAD_COVER_S / 2:g} (a label upload and its retry must "
                f"fit in the {LABEL_UPLOAD_COVER_S:g} s its lease covers), "
                f"got {apps[-1].timeout_s:g}",
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
    longest_call = max((a.timeout_s for a in apps), default=0.0)
    if reconciler.lease_s < longest_call:
        # A task runs at least one Temu call inside its lease; a shorter lease expires during
        # that call and the task is taken away from a worker that is still busy with it.
        raise r.err(
            "lease_s",
            f"must be >= the longest apps.timeout_s ({longest_call:g} s): a task's lease must "
            f"outlast one Temu call, got {reconciler.lease_s}",
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
        logistics_pending_days=r.integer("logistics_pending_days", d.logistics_pending_days),
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
