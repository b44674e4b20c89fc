"""Credentials and clock, through the CLI against the simulator.

- A revoked access token (3000034) stops that shop with a clear status; the other shop
  completes; one-shot commands exit 3 and name it in ``shops_failed``.
- A wrong app_secret (3000001) or an unknown app_key (3000026) is a configuration error of
  that app: its shops fail naming the app (never the secret), shops of the other app complete,
  exit 3. (Exit 3, not 2: the run did happen and the other apps' shops are in Postgres; 2 is
  for problems found before anything ran. When every app is wrong there is nothing else to
  complete and the exit code is still 3 with every shop in ``shops_failed``.)
- A clock skew answer (3000011/3000012) is reported with the skew in seconds, read from the
  server's Date header, so the operator knows what to fix.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import asyncpg

from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from tests.fixtures_proc import run_cli
from tests.fixtures_sim import SimFactory
from tests.reliability.harness import sim_toml
from tests.truth import truth_differences

SMALL = {"orders": 120, "returns": 20, "qps": 400}


async def _only_shop_equals_truth(
    pg_url: str, schema: str, sim: Simulator, good: str, bad: str
) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        problems = await truth_differences(conn, schema, sim)
        bad_rows = await conn.fetchval(
            f'SELECT count(*) FROM "{schema}".orders WHERE shop_id = $1', bad
        )
    finally:
        await conn.close()
    assert not [p for p in problems if p.startswith(good)], problems
    assert bad_rows == 0


async def test_revoked_token_stops_that_shop_only(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    config = SimConfig.default(shops=2, seed=31, **SMALL)  # type: ignore[arg-type]
    sim = await sim_factory(config)
    assert sim.revoke_token("sim-token-shop-2")
    cfg = tmp_path / "config.toml"
    cfg.write_text(sim_toml(sim, config, db_url=pg_url, schema=schema))
    conf = ["--config", str(cfg)]

    once = await run_cli(tmp_path, "once", [*conf, "run", "--once", "--json"])
    assert once.returncode == 3, once.stderr[-3000:]
    assert once.summary()["shops_failed"] == ["shop-2"]
    assert "shop-2" in once.stderr and "3000034" in once.stderr, once.stderr[-3000:]
    await _only_shop_equals_truth(pg_url, schema, sim, "shop-1", "shop-2")

    status = await run_cli(tmp_path, "status", [*conf, "status"])
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    failing = [ln for ln in lines if ln.startswith("shop-2") and "FAILING" in ln]
    assert failing and all("3000034" in ln for ln in failing), status.stdout
    assert not [ln for ln in lines if ln.startswith("shop-1") and "FAILING" in ln], status.stdout


async def test_wrong_secret_and_unknown_app_fail_that_apps_shops(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    config = SimConfig.default(shops=2, apps=2, seed=32, **SMALL)  # type: ignore[arg-type]
    sim = await sim_factory(config)
    good = sim_toml(
        sim, config, db_url=pg_url, schema=schema, extra="[reconciler]\nenabled = false\n"
    )
    wrong_secret = "not-the-secret-9d7e5c3a1f"
    real_secret = config.apps[1].app_secret
    cases = {
        "bad signature": (good.replace(real_secret, wrong_secret), "sim-app-2", "3000001"),
        "unknown app_key": (good.replace('"sim-app-2"', '"sim-app-9"'), "sim-app-9", "3000026"),
    }
    for case, (text, app_key, code) in cases.items():
        cfg = tmp_path / f"{code}.toml"
        cfg.write_text(text)
        bf = await run_cli(
            tmp_path,
            code,
            ["--config", str(cfg), "backfill", "--since", "2000-01-01T00:00:00Z", "--json"],
        )
        assert bf.returncode == 3, f"{case}: {bf.stderr[-3000:]}"
        assert bf.summary()["shops_failed"] == ["shop-2"], case
        errors = [ln for ln in bf.stderr.splitlines() if "shop-2" in ln and "ERROR" in ln]
        assert errors, f"{case}: {bf.stderr[-3000:]}"
        for line in errors:
            assert code in line and f"app {app_key}" in line, f"{case}: {line}"
            assert "configuration" in line, f"{case}: not called a configuration error: {line}"
        output = bf.stdout + bf.stderr
        assert wrong_secret not in output and real_secret not in output, case
        await _only_shop_equals_truth(pg_url, schema, sim, "shop-1", "shop-2")


async def test_clock_skew_is_reported_in_seconds(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    config = SimConfig.default(shops=1, seed=33, **SMALL)  # type: ignore[arg-type]
    sim = await sim_factory(config)
    skew = 1000  # the server's clock is this far ahead of ours
    sim.world.clock = lambda: time.time() + skew
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        sim_toml(sim, config, db_url=pg_url, schema=schema, extra="[reconciler]\nenabled = false\n")
    )
    once = await run_cli(tmp_path, "once", ["--config", str(cfg), "run", "--once", "--json"])
    # The only shop failed: a failure (1), not "some shops failed" (3).
    assert once.returncode == 1, once.stderr[-3000:]
    assert once.summary()["shops_failed"] == ["shop-1"]
    errors = [ln for ln in once.stderr.splitlines() if "ERROR" in ln and "3000012" in ln]
    assert errors, once.stderr[-3000:]
    for line in errors:
        m = re.search(r"local clock is (\d+) s behind the server's", line)
        assert m, line
        # The Date header has one-second resolution, and a request takes a moment.
        assert abs(int(m.group(1)) - skew) <= 2, line
