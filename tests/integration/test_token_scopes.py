"""Access tokens (interface.md "Access tokens"), against the simulator over real HTTP: a shop
whose token lacks an API type the engine needs fails alone, before any list call; `status`
shows every shop's token expiry and missing scopes, and warns of a token about to expire."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest

from engine.app.runtime import open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.cli.status import cmd_status
from engine.sim.config import SimConfig
from engine.temu.token_info import RECONCILER_SCOPES, RETURNS_SCOPES
from tests.fixtures_sim import SimFactory

LIST = "bg.order.list.v2.get"


async def test_a_shop_missing_a_scope_fails_alone_before_any_list_call(
    sim_factory: SimFactory, pg_url: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = SimConfig.default(orders=300, returns=0, shops=2, qps=100, seed=7)
    sim = await sim_factory(config)
    expires = int(time.time()) + 5 * 86400
    sim.set_token("shop-1", expires_at=expires)
    sim.set_token("shop-2", scopes=sorted(set(sim.world.api_types) - {LIST}))
    settings = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, sync={"returns": False}
    )
    rt = await open_runtime(settings)
    try:
        result = await rt.sync_service().backfill(settings.sync.start, None)
        assert set(result.failed) == {("shop-2", "orders")}
        assert LIST in result.failed[("shop-2", "orders")]
        stored = await rt.pool.fetch("SELECT shop_id, count(*) AS n FROM orders GROUP BY 1")
        assert {r["shop_id"]: r["n"] for r in stored} == {"shop-1": 300}
        # Temu was never asked for shop-2's orders: it would have answered 3000032.
        errors = sim.stats()["apps"][settings.shops[1].app_key]["errors"]
        assert "3000032" not in errors, errors

        capsys.readouterr()
        assert await cmd_status(settings, as_json=True) == 0
        doc = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
        shops = {s["id"]: s for s in doc["shops"]}
        want = datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z")
        assert shops["shop-1"] == {
            "id": "shop-1",
            "token_expires_at": want,
            "token_missing_scopes": [],
            "token_error": None,
        }
        assert shops["shop-2"]["token_missing_scopes"] == [LIST]

        assert await cmd_status(settings, as_json=False) == 0
        text = capsys.readouterr().out
        assert f"warning: shop shop-1: the access token expires at {want}" in text
        assert f"shop shop-2: the access token lacks {LIST}" in text
    finally:
        await rt.close()


async def test_a_token_without_the_label_upload_types_still_syncs_orders(
    sim_factory: SimFactory, pg_url: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reconciler's API types are the reconciler's: a seller who did not grant the label
    upload still gets their orders (and `status` still names what is missing)."""
    config = SimConfig.default(orders=50, returns=0, shops=1, qps=100, seed=7)
    sim = await sim_factory(config)
    upload_only = set(RECONCILER_SCOPES) - set(RETURNS_SCOPES)
    sim.set_token("shop-1", scopes=sorted(set(sim.world.api_types) - upload_only))
    settings = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, sync={"returns": False}
    )
    assert settings.reconciler.enabled
    rt = await open_runtime(settings)
    try:
        result = await rt.sync_service().backfill(settings.sync.start, None)
        assert not result.failed, result.failed
        assert await rt.pool.fetchval("SELECT count(*) FROM orders") == 50
        capsys.readouterr()
        assert await cmd_status(settings, as_json=True) == 0
        doc = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert doc["shops"][0]["token_missing_scopes"] == sorted(upload_only)
    finally:
        await rt.close()


async def test_status_says_null_before_any_check_and_never_migrates(
    sim_factory: SimFactory, pg_url: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = SimConfig.default(orders=10, returns=0, shops=1, qps=100, seed=7)
    sim = await sim_factory(config)
    settings = settings_for_simulator(sim, config, database_url=pg_url, schema=schema)
    capsys.readouterr()
    assert await cmd_status(settings, as_json=True) == 0
    doc = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["shops"] == [
        {
            "id": "shop-1",
            "token_expires_at": None,
            "token_missing_scopes": None,
            "token_error": None,
        }
    ]
    # A schema that was never migrated: status does not create it, and shows every configured
    # stream as never synced (exit 0), in the same shape as after a migration.
    from dataclasses import replace

    fresh = replace(settings, database=replace(settings.database, schema=schema + "_new"))
    assert await cmd_status(fresh, as_json=True) == 0
    out = capsys.readouterr()
    assert "does not exist yet: nothing synced" in out.err
    empty = orjson.loads(out.out.strip().splitlines()[-1])
    assert empty["shops"] == doc["shops"]
    assert [(r["shop_id"], r["stream"], r["cursor"]) for r in empty["streams"]] == [
        (r["shop_id"], r["stream"], None) for r in doc["streams"]
    ]
    assert set(empty["streams"][0]) == set(doc["streams"][0])
    assert empty["outbox"] == doc["outbox"]
    assert await cmd_status(fresh, as_json=False) == 0
    assert "never synced" in capsys.readouterr().out
    rt = await open_runtime(settings)
    try:
        assert (
            await rt.pool.fetchval(
                "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema + "_new"
            )
            == 0
        )
    finally:
        await rt.close()


async def test_an_app_refused_by_temu_is_stopped_not_asked_again_for_each_shop(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    """temu-api.md: 3000001 / 3000020-28 mean "stop that app; clear error". With a wrong
    app_secret, the first shop's token check is refused; the app's other shops fail with the
    same clear error without a request of their own, and another app's shop goes on."""
    from dataclasses import replace

    from engine.config import Secret

    config = SimConfig.default(orders=50, returns=0, shops=4, apps=2, qps=100, seed=7)
    sim = await sim_factory(config)
    settings = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, sync={"returns": False}
    )
    broken = settings.apps[0].app_key
    apps = tuple(
        replace(a, app_secret=Secret("0" * 40)) if a.app_key == broken else a for a in settings.apps
    )
    settings = replace(settings, apps=apps)
    mine = sorted(s.id for s in settings.shops if s.app_key == broken)
    assert len(mine) == 2
    rt = await open_runtime(settings)
    try:
        result = await rt.sync_service().incremental_pass()
    finally:
        await rt.close()
    assert sorted({shop for shop, _ in result.failed}) == mine
    assert all(f"app {broken}" in why for why in result.failed.values()), result.failed
    sent = sim.stats(arrivals=False)["apps"][broken]
    assert sent["accepted"] + sum(sent["errors"].values()) == 1, sent


async def test_status_speaks_of_the_configured_token_not_the_one_it_replaced(
    sim_factory: SimFactory, pg_url: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seller re-authorized and the operator pasted a token Temu does not know: `status`
    must not go on showing the old token's expiry and scopes as if all were well."""
    from dataclasses import replace

    from engine.config import Secret

    config = SimConfig.default(orders=20, returns=0, shops=1, qps=100, seed=7)
    sim = await sim_factory(config)
    good = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, sync={"returns": False}
    )
    rt = await open_runtime(good)
    try:
        assert not (await rt.sync_service().backfill(good.sync.start, None)).failed
    finally:
        await rt.close()
    capsys.readouterr()
    assert await cmd_status(good, as_json=True) == 0
    doc = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["shops"][0]["token_expires_at"] is not None

    shop = replace(good.shops[0], access_token=Secret("pasted-wrong-token"))
    bad = replace(good, shops=(shop,))
    rt = await open_runtime(bad)
    try:
        assert (await rt.sync_service().backfill(bad.sync.start, None)).failed
    finally:
        await rt.close()
    capsys.readouterr()
    assert await cmd_status(bad, as_json=True) == 0
    [entry] = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])["shops"]
    assert (entry["token_expires_at"], entry["token_missing_scopes"]) == (None, None)
    assert "3000031" in entry["token_error"] or "unknown" in entry["token_error"].lower()
    assert await cmd_status(bad, as_json=False) == 0
    text = capsys.readouterr().out
    assert "shop shop-1: Temu refused the access token" in text
    assert "expires at" not in text
