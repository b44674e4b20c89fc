"""`python -m engine` as an operator runs it: --version, and Ctrl-C on a one-shot command."""

from __future__ import annotations

import asyncio
import importlib.metadata
import signal
import socket
from pathlib import Path

import orjson
import pytest

from engine.sim import SimConfig
from tests.e2e.daemon_harness import write_config
from tests.fixtures_proc import EngineProcess, run_cli
from tests.fixtures_sim import SimFactory


async def test_version_prints_and_exits_0(tmp_path: Path) -> None:
    rc, out, _ = (await run_cli(tmp_path, "version", ["--version"], within=30)).result()
    assert rc == 0
    assert out.strip() == f"temu-sync {importlib.metadata.version('temu-sync')}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_during_a_one_shot_command_exits_130(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGTERM (systemd stopping a backfill unit, kill) takes the same way out as Ctrl-C: the
    command's cleanup runs (leases released, pool closed) instead of dying on the spot."""
    # A "Postgres" that accepts connections and never answers keeps `migrate` waiting.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen()
        black_hole.setblocking(False)
        port = black_hole.getsockname()[1]
        config = tmp_path / "config.toml"
        config.write_text(f'[database]\nurl = "postgresql://postgres@127.0.0.1:{port}/postgres"\n')
        proc = EngineProcess(tmp_path, "migrate", ["--config", str(config), "migrate"])
        await proc.start()
        try:
            loop = asyncio.get_running_loop()
            # The command is now inside its event loop, its signal handlers installed.
            conn, _ = await asyncio.wait_for(loop.sock_accept(black_hole), 30)
            await asyncio.sleep(0.3)
            proc.signal(sig)
            rc = await proc.wait(30)
            conn.close()
        finally:
            await proc.kill()
    assert rc == 130, proc.stderr
    assert "Traceback" not in proc.stderr


async def test_an_error_under_the_journal_has_a_priority_prefix(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[database]\nurl = "postgresql://postgres@127.0.0.1:9/postgres"\n')
    # JOURNAL_STREAM names the device and inode of the process's stderr: its output file.
    p = EngineProcess(tmp_path, "migrate", ["--config", str(config), "migrate"])
    p.err_path.touch()
    st = p.err_path.stat()
    p.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    await p.start()
    assert await p.wait(60) == 1
    assert p.stderr.startswith("<3>ERROR engine.cli: cannot use Postgres")


async def test_a_short_run_reports_a_rate_within_the_apps_limit(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    """interface.md: qps = requests / elapsed_s, and the app's limit is 20 a second. A run of
    a few requests (a pass right after a backfill) takes the pacer's first three at once;
    elapsed_s is the command's own time, so the figure stays what the run really did."""
    sim = await sim_factory(SimConfig.default(orders=60, returns=10, shops=1, qps=20, seed=3))
    cfg = write_config(
        tmp_path / "config.toml", sim, db_url=pg_url, schema=schema, listen="", reconciler=False
    )
    base = ["--config", str(cfg)]
    rc, out, err = (await run_cli(tmp_path, "first", [*base, "run", "--once"])).result()
    assert rc == 0, err
    rc, out, err = (await run_cli(tmp_path, "again", [*base, "run", "--once", "--json"])).result()
    assert rc == 0, err
    summary = orjson.loads(out.strip().splitlines()[-1])
    assert 0 < summary["requests"] <= 10, summary
    assert summary["qps"] <= 20, summary


@pytest.mark.parametrize(
    "command",
    [
        ["backfill", "--since", "2025-01-01T00:00:00Z", "--json"],
        ["run", "--once", "--json"],
        ["reconcile", "--once", "--json"],
    ],
    ids=["backfill", "run-once", "reconcile-once"],
)
async def test_a_one_shot_run_that_fails_still_ends_with_its_summary(
    sim_factory: SimFactory, tmp_path: Path, command: list[str]
) -> None:
    """interface.md: with --json the LAST line of stdout is the summary, also when the run
    fails outright (here: nothing listens where the database should be)."""
    sim = await sim_factory(SimConfig.default(orders=10, returns=2, shops=2, seed=3))
    cfg = write_config(
        tmp_path / "config.toml",
        sim,
        db_url="postgresql://postgres@127.0.0.1:9/postgres",
        schema="temu_sync",
        listen="",
    )
    proc = await run_cli(tmp_path, command[0], ["--config", str(cfg), *command], within=60)
    rc, _, err = proc.result()
    assert rc == 1, err
    assert "cannot use Postgres" in err
    summary = proc.summary()
    assert summary["shops_failed"] == ["shop-1", "shop-2"]
    assert (summary["requests"], summary["orders"]["inserted"], summary["rejected"]) == (0, 0, 0)
