"""``temu-sync reconcile --once --json`` as a subprocess against a simulator in this process."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from engine.app.runtime import open_runtime
from engine.app.sim_settings import config_toml_for_simulator
from engine.sim.config import SimConfig
from tests.fixtures_proc import run_cli
from tests.fixtures_sim import SimFactory
from tests.integration.test_reconcile_flow import (
    QPS,
    load_from_temu,
    make_settings,
)


async def test_reconcile_once_json_reports_uploads_and_oc_updates(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    config = SimConfig.default(
        orders=300, returns=80, shops=1, qps=QPS, seed=7, oc_label_ready_after=0
    )
    sim = await sim_factory(config)
    rt = await open_runtime(make_settings(sim, config, pg_url, schema))
    try:
        await load_from_temu(rt)
    finally:
        await rt.close()
    text = config_toml_for_simulator(
        sim, config, database_url=pg_url, schema=schema, extra="[reconciler]\ninterval_s = 1\n"
    )
    # The default OC pace (5/s) would only make the test slow.
    text = text.replace("[orange_connex]\n", "[orange_connex]\nqps = 100\n")
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)

    proc = await run_cli(
        tmp_path, "reconcile", ["--config", str(cfg), "reconcile", "--once", "--json"], within=120
    )
    summary = proc.assert_ok().summary()
    uploads, pushes = sim.uploads(), sim.oc_pushes()
    assert uploads and pushes, "the seed must give work of both kinds"
    assert summary["labels_uploaded"] == len(uploads)
    assert summary["oc_updates"] == len(pushes)
    assert set(Counter(u["parentAfterSalesSn"] for u in uploads).values()) == {1}
    assert summary["requests"] > 0


async def test_reconcile_once_blocked_by_oc_credentials_does_not_exit_0(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    """Orange Connex refuses our refresh token: every OC task waits "blocked by
    configuration". A cron job running `reconcile --once` must see it (exit 1, the shop in
    shops_failed), not a green 0 while nothing can ever be pushed."""
    config = SimConfig.default(orders=300, returns=80, shops=1, qps=QPS, seed=7)
    sim = await sim_factory(config)
    rt = await open_runtime(make_settings(sim, config, pg_url, schema))
    try:
        await load_from_temu(rt)
    finally:
        await rt.close()
    text = config_toml_for_simulator(sim, config, database_url=pg_url, schema=schema)
    text = text.replace(
        f'refresh_token = "{config.oc_refresh_token}"', 'refresh_token = "revoked-long-ago"'
    )
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)

    proc = await run_cli(
        tmp_path, "reconcile", ["--config", str(cfg), "reconcile", "--once", "--json"], within=120
    )
    rc, _, err = proc.result()
    assert "blocked by configuration" in err
    assert rc == 1, err
    summary = proc.summary()
    assert summary["shops_failed"] == ["shop-1"]
    assert summary["oc_updates"] == 0
