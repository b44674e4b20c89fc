"""Embedded Postgres survives what a crashed run leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from engine.store.embedded import EmbeddedPostgres, clear_stale_state


def _dead_pid() -> int:
    pid = 4_000_000  # above the default pid_max, so never alive
    return pid


async def test_restart_after_a_crash(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "state")
    url = pg.start()
    conn = await asyncpg.connect(url)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()
    pg.stop()

    # What kill -9 of the server and of its last user leaves: a pid file naming a dead
    # process and a handle list naming a dead user.
    pgdata = tmp_path / "state" / "pg"
    pidfile = pgdata / "postmaster.pid"
    lines = [
        str(_dead_pid()),
        str(pgdata.resolve()),
        "0",
        "5432",
        str(pgdata),
        "",
        "0 0",
        "ready",
    ]
    pidfile.write_text("\n".join(lines) + "\n")
    (pgdata / ".handle_pids.json").write_text(json.dumps([_dead_pid()]))

    pg2 = EmbeddedPostgres(tmp_path / "state", cleanup="delete")
    url = pg2.start()
    try:
        conn = await asyncpg.connect(url)
        assert await conn.fetchval("SELECT 2") == 2
        await conn.close()
        assert _dead_pid() not in json.loads((pgdata / ".handle_pids.json").read_text())
    finally:
        pg2.stop()
    assert not pgdata.exists()


def test_clear_stale_state_keeps_live_handles(tmp_path: Path) -> None:
    import os

    (tmp_path / ".handle_pids.json").write_text(json.dumps([os.getpid(), _dead_pid()]))
    removed = clear_stale_state(tmp_path)
    assert json.loads((tmp_path / ".handle_pids.json").read_text()) == [os.getpid()]
    assert removed == [f"dead handle pids [{_dead_pid()}]"]
    assert clear_stale_state(tmp_path) == []
