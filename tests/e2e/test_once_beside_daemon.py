"""One-shot passes take no app lease, so beside a running daemon they must refuse, not run, and
`labels import` must not call Temu: two processes pacing one app separately would double its
request rate."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson

from engine.sim import SimConfig
from tests.e2e.daemon_harness import eventually, free_port, running_daemon, write_config
from tests.fixtures_proc import run_cli
from tests.fixtures_sim import SimFactory

CARRIERS = "temu.aftersales.carrier.get"
TOKEN_INFO = "bg.open.accesstoken.info.get"


async def test_run_once_refuses_while_a_daemon_owns_the_app(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    sim = await sim_factory(SimConfig.default(orders=50, returns=10, shops=1))
    cfg = write_config(
        tmp_path / "config.toml",
        sim,
        db_url=pg_url,
        schema=schema,
        listen=f"127.0.0.1:{free_port()}",
    )
    async with running_daemon(tmp_path, cfg):
        since = ["--since", "2025-01-01T00:00:00Z"]
        for command in (["run", "--once"], ["reconcile", "--once"], ["backfill", *since]):
            rc, out, err = (
                await run_cli(tmp_path, "once", ["--config", str(cfg), *command, "--json"])
            ).result()
            assert rc == 1, out + err
            assert "owned by the running daemon" in err and "sim-app-1" in err, err
            # interface.md: with --json the last line of stdout is the summary, refused too.
            summary = orjson.loads(out.strip().splitlines()[-1])
            assert summary["shops_failed"] == ["shop-1"] and summary["requests"] == 0, summary

    # With the daemon stopped (its lease released), the same pass runs.
    rc, out, err = (
        await run_cli(tmp_path, "again", ["--config", str(cfg), "run", "--once"])
    ).result()
    assert rc == 0, out + err


async def test_labels_import_beside_a_daemon_sends_nothing_to_temu(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    """`labels import` queues while a daemon paces the app: its carrier and token checks would
    be a second pacer's traffic on the same app (over 20 req/s together), so it makes none; the
    daemon's upload task checks them when it runs."""
    sim = await sim_factory(SimConfig.default(orders=50, returns=60, shops=1, seed=5))
    cfg = write_config(
        tmp_path / "config.toml",
        sim,
        db_url=pg_url,
        schema=schema,
        listen=f"127.0.0.1:{free_port()}",
        reconciler=False,  # the daemon syncs; nothing uploads the queued labels meanwhile
    )
    waiting = [
        r["parentAfterSalesSn"]
        for r in sim.truth_returns("shop-1")
        if r["parentAfterSalesStatus"] == 8 and 10 in r["availableOperateList"]
    ]
    assert waiting, "the seed must give returns waiting for a label"
    lines = tmp_path / "labels.jsonl"
    lines.write_text(
        "".join(
            orjson.dumps(
                {
                    "parentAfterSalesSn": sn,
                    "labelUrl": f"https://labels.example.com/{sn}.pdf",
                    "labelFileFormat": "pdf",
                    "trackingNumber": f"1ZTEST{i:010d}",
                    "trackingCompany": "United Parcel Service",
                }
            ).decode()
            + "\n"
            for i, sn in enumerate(waiting)
        )
    )
    conn = await asyncpg.connect(pg_url)
    try:
        async with running_daemon(tmp_path, cfg):

            async def returns_synced() -> bool:
                n = await conn.fetchval(f'SELECT count(*) FROM "{schema}".returns')
                return bool(n == len(sim.truth_returns("shop-1")))

            await eventually(returns_synced, within=30, what="the returns in Postgres")
            before = sim.stats(arrivals=False)["apps"]["sim-app-1"]["by_type"]
            command = ["--config", str(cfg), "labels", "import", str(lines)]
            rc, out, err = (await run_cli(tmp_path, "import", command)).result()
            after = sim.stats(arrivals=False)["apps"]["sim-app-1"]["by_type"]
        assert rc == 0, out + err
        assert f"{len(waiting)} label(s) queued" in out, out + err
        sent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        assert sent.get(CARRIERS, 0) == 0 and sent.get(TOKEN_INFO, 0) == 0, sent
        queued = await conn.fetchval(
            f"SELECT count(*) FROM \"{schema}\".outbox WHERE kind = 'upload_label'"
        )
        assert queued == len(waiting)
    finally:
        await conn.close()
