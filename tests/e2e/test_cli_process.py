"""`python -m engine` as an operator runs it: --version, and Ctrl-C on a one-shot command."""

from __future__ import annotations

import asyncio
import importlib.metadata
import signal
import socket
from pathlib import Path

from tests.fixtures_proc import EngineProcess, run_cli


async def test_version_prints_and_exits_0(tmp_path: Path) -> None:
    rc, out, _ = (await run_cli(tmp_path, "version", ["--version"], within=30)).result()
    assert rc == 0
    assert out.strip() == f"temu-sync {importlib.metadata.version('temu-sync')}"


async def test_sigint_during_a_one_shot_command_exits_130(tmp_path: Path) -> None:
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
            proc.signal(signal.SIGINT)
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
