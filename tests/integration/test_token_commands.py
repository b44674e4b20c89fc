"""The access-token check of the one-shot commands that call Temu outside the sync
(interface.md "Access tokens", "Exit codes"), each run as ``python -m engine`` against the
simulator over HTTP and real Postgres: ``reconcile --once``, ``labels import`` and ``webhooks
subscribe`` check each shop's token first, with the API types that command calls; a shop
whose token lacks one fails alone, named with the missing types, and Temu hears nothing more
for it, while the other shop is served. ``reconcile --once`` also names a shop whose tasks
Temu refuses for its token in ``shops_failed`` and exits 3 (1 when every shop failed).

Two apps, one shop each: the simulator counts requests per app, so shop-2's app counters are
everything Temu heard for shop-2.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.app.runtime import open_runtime
from engine.app.sim_settings import config_toml_for_simulator
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from tests.fixtures_proc import EngineProcess, run_cli
from tests.fixtures_sim import SimFactory
from tests.integration.test_reconcile_flow import QPS, awaiting, load_from_temu, make_settings
from tests.integration.test_reconcile_labels import ecart

TOKEN_INFO = "bg.open.accesstoken.info.get"
PREPARE = "temu.aftersales.returnlabel.prepare.get"
UPLOAD = "temu.aftersales.upload.returnlabel"
CARRIERS = "temu.aftersales.carrier.get"
SUBSCRIBE = "bg.tmc.message.update"
EVENTS = ["bg_order_status_change_event"]


@dataclass
class World:
    sim: Simulator
    sim_config: SimConfig
    schema: str
    pg_url: str
    config: Path
    workdir: Path

    async def cli(self, name: str, *args: str) -> EngineProcess:
        return await run_cli(self.workdir, name, ["--config", str(self.config), *args], within=120)

    def heard(self, app_key: str) -> dict[str, Any]:
        """What Temu heard from one app since the last reset: accepted calls by API type and
        refusals by code."""
        app = self.sim.stats(arrivals=False)["apps"][app_key]
        return {"by_type": app["by_type"], "errors": app["errors"]}

    async def sql(self, query: str) -> list[Any]:
        rt = await open_runtime(make_settings(self.sim, self.sim_config, self.pg_url, self.schema))
        try:
            return list(await rt.pool.fetch(query))
        finally:
            await rt.close()

    def grant_all_but(self, shop: str, *missing: str) -> None:
        self.sim.set_token(shop, scopes=sorted(set(self.sim.world.api_types) - set(missing)))


@pytest.fixture
async def world(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> AsyncIterator[World]:
    config = SimConfig.default(
        orders=200, returns=80, shops=2, apps=2, qps=QPS, seed=7, oc_label_ready_after=0
    )
    sim = await sim_factory(config)
    # Both tokens good while the data is loaded (the sync stores each shop's check).
    rt = await open_runtime(make_settings(sim, config, pg_url, schema))
    try:
        await load_from_temu(rt)
    finally:
        await rt.close()
    events = orjson.dumps(EVENTS).decode()
    text = config_toml_for_simulator(
        sim,
        config,
        database_url=pg_url,
        schema=schema,
        extra=f"[reconciler]\ninterval_s = 1\n\n[webhooks]\nevents = {events}\n",
    )
    cfg = tmp_path / "config.toml"
    cfg.write_text(text.replace("[orange_connex]\n", "[orange_connex]\nqps = 100\n"))
    yield World(sim, config, schema, pg_url, cfg, tmp_path)


async def a_day_later(world: World) -> None:
    """The stored token checks are over a day old: the next command asks Temu again."""
    await world.sql("UPDATE token_checks SET checked_at = checked_at - interval '25 hours'")


async def test_reconcile_once_skips_a_shop_missing_a_scope_and_exits_3(world: World) -> None:
    sim = world.sim
    world.grant_all_but("shop-2", PREPARE, UPLOAD)
    await a_day_later(world)
    assert awaiting(sim, "shop-2"), "the seed must give shop-2 returns waiting for a label"
    sim.reset_stats()

    proc = await world.cli("reconcile", "reconcile", "--once", "--json")
    code, _, err = proc.result()
    assert code == 3, err[-3000:]
    assert proc.summary()["shops_failed"] == ["shop-2"]
    assert f"the access token is not authorized for {PREPARE}, {UPLOAD}" in err
    # Temu heard shop-2's token check and nothing else; shop-1 was served.
    assert world.heard("sim-app-2") == {"by_type": {TOKEN_INFO: 1}, "errors": {}}
    assert sim.uploads("shop-2") == []
    assert sim.uploads("shop-1")
    assert world.heard("sim-app-1")["by_type"].get(UPLOAD)

    # The answer is kept in Postgres: a second run the same day asks Temu nothing for shop-2.
    sim.reset_stats()
    again = await world.cli("reconcile-2", "reconcile", "--once", "--json")
    assert again.result()[0] == 3 and again.summary()["shops_failed"] == ["shop-2"]
    assert world.heard("sim-app-2") == {"by_type": {}, "errors": {}}


async def test_reconcile_once_names_a_shop_whose_tasks_fail_on_its_token(world: World) -> None:
    """The stored checks are fresh (no new check today), then both tokens are revoked: every
    task fails on 3000034. Every shop failed: exit 1. Shop-1's token comes back and its tasks
    come due again: it uploads, shop-2 still fails: exit 3."""
    sim = world.sim
    for shop in ("shop-1", "shop-2"):
        assert sim.revoke_token(f"sim-token-{shop}")

    first = await world.cli("reconcile", "reconcile", "--once", "--json")
    assert first.result()[0] == 1, first.stderr[-3000:]
    assert first.summary()["shops_failed"] == ["shop-1", "shop-2"]
    assert first.summary()["labels_uploaded"] == 0

    assert sim.unrevoke_token("sim-token-shop-1")
    # The blocked tasks look again after 15 minutes: let those pass.
    await world.sql("UPDATE outbox SET next_attempt_at = now() WHERE state = 'pending'")
    second = await world.cli("reconcile-2", "reconcile", "--once", "--json")
    assert second.result()[0] == 3, second.stderr[-3000:]
    assert second.summary()["shops_failed"] == ["shop-2"]
    assert second.summary()["labels_uploaded"] == len(sim.uploads("shop-1")) > 0


async def test_labels_import_refuses_the_lines_of_a_shop_missing_a_scope(world: World) -> None:
    sim = world.sim
    world.grant_all_but("shop-2", CARRIERS)
    await a_day_later(world)
    one = awaiting(sim, "shop-1")[0]["parentAfterSalesSn"]
    two = awaiting(sim, "shop-2")[0]["parentAfterSalesSn"]
    path = world.workdir / "labels.jsonl"
    lines = [{**ecart(one), "shop": "shop-1"}, {**ecart(two), "shop": "shop-2"}]
    path.write_text("".join(orjson.dumps(line).decode() + "\n" for line in lines))
    sim.reset_stats()

    proc = await world.cli("labels", "labels", "import", str(path))
    code, out, err = proc.result()
    assert code == 3, err[-3000:]
    assert "1 label(s) queued, 1 line(s) refused" in out
    assert "shops failed: shop-2" in out
    assert f"line 2: shop shop-2: the access token is not authorized for {CARRIERS}" in err
    assert world.heard("sim-app-2") == {"by_type": {TOKEN_INFO: 1}, "errors": {}}
    assert world.heard("sim-app-1")["by_type"].get(CARRIERS) == 1

    merchant = await world.sql("SELECT shop_id FROM outbox WHERE payload->>'source' = 'merchant'")
    assert [r["shop_id"] for r in merchant] == ["shop-1"]


async def test_webhooks_subscribe_refuses_a_shop_missing_the_scope(world: World) -> None:
    sim = world.sim
    world.grant_all_but("shop-2", SUBSCRIBE)
    await a_day_later(world)
    sim.reset_stats()

    proc = await world.cli("webhooks", "webhooks", "subscribe")
    code, out, err = proc.result()
    assert code == 3, err[-3000:]
    assert "shop-1: subscribed: " in out
    assert f"shop-2: refused: shop shop-2: the access token is not authorized for {SUBSCRIBE}" in (
        out
    )
    assert world.heard("sim-app-2") == {"by_type": {TOKEN_INFO: 1}, "errors": {}}
    assert sim.webhooks.subscriptions["shop-1"] == set(EVENTS)
    assert not sim.webhooks.subscriptions.get("shop-2")
