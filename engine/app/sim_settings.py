"""Settings that point the engine at a running built-in simulator (demo, tests, benchmark)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.config import (
    AppSettings,
    DatabaseSettings,
    HttpSettings,
    OrangeConnexSettings,
    ReconcilerSettings,
    Secret,
    Settings,
    ShopSettings,
    SyncSettings,
)
from engine.sim.config import SimConfig
from engine.sim.server import Simulator


def settings_for_simulator(
    sim: Simulator,
    config: SimConfig,
    *,
    database_url: str = "",
    schema: str = "temu_sync",
    data_dir: Path = Path(".temu-sync"),
    sync: dict[str, Any] | None = None,
    reconciler: dict[str, Any] | None = None,
    http_listen: str = "",
    admin_token: str = "",
    oc_enabled: bool = True,
) -> Settings:
    """Every app, shop and the OC endpoint of ``sim``; sync starts where its data starts.

    The simulator stamps changes "now", so the safety lag is short by default here.
    """
    start, _ = config.time_range()
    apps = tuple(
        AppSettings(
            app_key=a.app_key,
            app_secret=Secret(a.app_secret),
            base_url=sim.temu_url,
            qps=float(a.qps),
        )
        for a in config.apps
    )
    shops = tuple(
        ShopSettings(id=s.shop_id, app_key=s.app_key, access_token=Secret(s.access_token))
        for s in config.shops
    )
    sync_settings = replace(
        SyncSettings(
            start=datetime.fromtimestamp(start, tz=UTC),
            safety_lag_s=1,
            overlap_s=120,
            poll_interval_s=5,
        ),
        **(sync or {}),
    )
    return Settings(
        database=DatabaseSettings(url=database_url, schema=schema, data_dir=data_dir),
        apps=apps,
        shops=shops,
        sync=sync_settings,
        reconciler=replace(ReconcilerSettings(interval_s=2), **(reconciler or {})),
        orange_connex=OrangeConnexSettings(
            enabled=oc_enabled,
            base_url=sim.oc_base_url,
            oauth_base_url=sim.oc_oauth_url,
            client_id=config.oc_client_id,
            refresh_token=Secret(config.oc_refresh_token),
        ),
        http=HttpSettings(listen=http_listen, admin_token=Secret(admin_token)),
        source="<simulator>",
    )


def config_toml_for_simulator(
    sim: Simulator,
    config: SimConfig,
    *,
    database_url: str,
    schema: str,
    extra: str = "",
) -> str:
    """The same as a config.toml text, for tests that run the CLI as a subprocess."""
    start, _ = config.time_range()
    lines = [
        "[database]",
        f'url = "{database_url}"',
        f'schema = "{schema}"',
        "",
    ]
    for a in config.apps:
        lines += [
            "[[apps]]",
            f'app_key = "{a.app_key}"',
            f'app_secret = "{a.app_secret}"',
            f'base_url = "{sim.temu_url}"',
            f"qps = {a.qps}",
            "",
        ]
    for s in config.shops:
        lines += [
            "[[shops]]",
            f'id = "{s.shop_id}"',
            f'app_key = "{s.app_key}"',
            f'access_token = "{s.access_token}"',
            "",
        ]
    lines += [
        "[orange_connex]",
        "enabled = true",
        f'base_url = "{sim.oc_base_url}"',
        f'oauth_base_url = "{sim.oc_oauth_url}"',
        f'client_id = "{config.oc_client_id}"',
        f'refresh_token = "{config.oc_refresh_token}"',
        "",
    ]
    text = "\n".join(lines)
    if "[sync]" not in extra:
        stamp = datetime.fromtimestamp(start, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        text += f'\n[sync]\nstart = "{stamp}"\nsafety_lag_s = 1\noverlap_s = 120\n'
    return text + "\n" + extra
