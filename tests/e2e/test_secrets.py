"""No secret ever reaches stdout or stderr: a sync with network faults and a revoked token,
in both log formats at full verbosity, one-shot and as the daemon."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import orjson
import pytest

from engine.sim import SimConfig, Simulator
from tests.e2e.daemon_harness import eventually, free_port, get_json, write_config
from tests.fixtures_proc import EngineProcess, run_cli
from tests.fixtures_sim import SimFactory

ADMIN_TOKEN = "admin-token-9f8e7d6c5b4a"
# Faults the transport retries through (a rate-limit storm or a 35 s stall would only
# make the test slow or flaky, not more revealing).
FAULTS = ("http502", "sys4000000", "truncated", "drop")


def _secrets(sim: Simulator) -> dict[str, str]:
    out = {f"app_secret {a.app_key}": a.app_secret for a in sim.config.apps}
    out |= {f"access_token {s.shop_id}": s.access_token for s in sim.config.shops}
    out["oc refresh token (seed)"] = sim.config.oc_refresh_token
    out["oc refresh token (current)"] = sim.info()["oc"]["refresh_token"]
    out["admin token"] = ADMIN_TOKEN
    return out


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_in_output(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path, log_format: str
) -> None:
    sim = await sim_factory(
        SimConfig.default(
            orders=400, returns=20, shops=2, qps=100, fault_rate=0.2, fault_kinds=FAULTS
        )
    )
    sim.revoke_token("sim-token-shop-2")
    port = free_port()
    cfg = write_config(
        tmp_path / "config.toml",
        sim,
        db_url=pg_url,
        schema=schema,
        listen=f"127.0.0.1:{port}",
        admin_token=ADMIN_TOKEN,
        reconciler=True,
    )
    base = ["--config", str(cfg), "--log-format", log_format, "-vv"]

    rc, out, err = (await run_cli(tmp_path, "once", [*base, "run", "--once", "--json"])).result()
    assert rc == 3, out + err  # shop-2 failed, shop-1 completed
    summary = orjson.loads(out.strip().splitlines()[-1])
    assert summary["shops_failed"] == ["shop-2"]
    assert summary["retries"] + summary["rate_limited"] > 0, summary  # the faults did happen
    transcript = out + err

    daemon = EngineProcess(tmp_path, "daemon", [*base, "run"])
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as http:

            async def both_shops_passed() -> bool:
                # Every sync loop has run: shop-1's succeeded, shop-2's failed on its token
                # (so the daemon has logged about both, at full verbosity).
                _, body = await get_json(http, f"http://127.0.0.1:{port}/healthz")
                loops = {k: v for k, v in body.get("loops", {}).items() if k.startswith("sync:")}
                shop2 = [v for k, v in loops.items() if k.startswith("sync:shop-2:")]
                shop1 = [v for k, v in loops.items() if k.startswith("sync:shop-1:")]
                return (
                    bool(shop1 and shop2)
                    and all(v["failing"] for v in shop2)
                    and all(v["last_progress"] and not v["failing"] for v in shop1)
                )

            await eventually(both_shops_passed, within=30, what="a pass of every loop")
            # The admin API sees the token on every POST: right, wrong and mangled.
            url = f"http://127.0.0.1:{port}/returns/RA-1/fulfillment"
            for auth in (ADMIN_TOKEN, ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1]):
                headers = {"Authorization": f"Bearer {auth}"}
                async with http.post(url, data=b"{", headers=headers) as resp:
                    assert resp.status in (400, 401), await resp.text()
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait(10) == 0, daemon.output
    finally:
        await daemon.kill()
    transcript += daemon.output

    rc, out, err = (await run_cli(tmp_path, "status", [*base, "status"])).result()
    assert rc == 0, err
    transcript += out + err

    # The logs did talk about the revoked shop; they just never quoted a credential.
    assert "3000034" in transcript or "access_token" in transcript
    assert _leaks(transcript, _secrets(sim)) == []
