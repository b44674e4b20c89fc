"""One-shot passes take no app lease, so beside a running daemon they must refuse, not run:
two processes pacing one app separately would double its request rate."""

from __future__ import annotations

from pathlib import Path

import orjson

from engine.sim import SimConfig
from tests.e2e.daemon_harness import NotifySocket, free_port, write_config
from tests.fixtures_proc import EngineProcess, run_cli
from tests.fixtures_sim import SimFactory


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
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = EngineProcess(
        tmp_path, "daemon", ["--config", str(cfg), "run"], env={"NOTIFY_SOCKET": str(notify.path)}
    )
    try:
        await daemon.start()
        await notify.wait_for("READY=1", within=30)
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
    finally:
        daemon.signal()
        await daemon.wait(10)
        await daemon.kill()
        notify.close()

    # With the daemon stopped (its lease released), the same pass runs.
    rc, out, err = (
        await run_cli(tmp_path, "again", ["--config", str(cfg), "run", "--once"])
    ).result()
    assert rc == 0, out + err
