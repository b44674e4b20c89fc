"""Postgres goes away under a running daemon and comes back: /healthz says so, nothing is lost.

Runs its own embedded Postgres (never the shared test server), stopped and started with
pg_ctl underneath the daemon.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.sim import SimConfig, Simulator
from engine.store.embedded import EmbeddedPostgres
from engine.store.migrate import migrate
from tests.e2e.daemon_harness import (
    NotifySocket,
    db_differences,
    eventually,
    free_port,
    get_json,
    write_config,
)
from tests.fixtures_db import new_schema_name
from tests.fixtures_proc import EngineProcess, run_cli
from tests.fixtures_sim import SimFactory


class OwnPostgres:
    """An embedded server this test may stop and start at will."""

    def __init__(self, base: Path) -> None:
        self.embedded = EmbeddedPostgres(base, cleanup="delete")
        self.url = ""

    def start(self) -> str:
        self.url = self.embedded.start()
        return self.url

    def _server(self) -> Any:
        return self.embedded._server  # pgserver's handle: its pg_ctl user and start logic

    def pg_stop(self) -> None:
        from pgserver import _commands

        server = self._server()
        # pg_ctl is generated at import time (one function per bundled binary).
        pg_ctl: Any = getattr(_commands, "pg_ctl")  # noqa: B009
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)

    def pg_start(self) -> None:
        server = self._server()
        # Same data directory and socket directory as before, so the daemon's URL still works.
        with server._lock:
            server.ensure_postgres_running()

    def close(self) -> None:
        self.embedded.stop()


@pytest.fixture(scope="module")
async def own_pg(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OwnPostgres]:
    # One server for the module: initdb is the slow part, and each test gets its own schema.
    pg = OwnPostgres(tmp_path_factory.mktemp("own-pg"))
    await asyncio.to_thread(pg.start)
    try:
        yield pg
    finally:
        await asyncio.to_thread(pg.close)


@pytest.fixture
async def own_schema(own_pg: OwnPostgres) -> str:
    """A migrated schema on the module's server; a test that stopped the server restarts it."""
    if not await _answers(own_pg.url):
        await asyncio.to_thread(own_pg.pg_start)
    name = new_schema_name()
    conn = await asyncpg.connect(own_pg.url)
    try:
        await migrate(conn, name)
    finally:
        await conn.close()
    return name


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def _differences(url: str, schema: str, sim: Simulator) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return await db_differences(conn, schema, sim)
    finally:
        await conn.close()


async def test_postgres_restart_under_the_daemon(
    sim_factory: SimFactory, own_pg: OwnPostgres, own_schema: str, tmp_path: Path
) -> None:
    sim = await sim_factory(SimConfig.default(orders=120, returns=20, shops=2))
    port = free_port()
    cfg = write_config(
        tmp_path / "config.toml",
        sim,
        db_url=own_pg.url,
        schema=own_schema,
        listen=f"127.0.0.1:{port}",
    )
    healthz = f"http://127.0.0.1:{port}/healthz"
    daemon = EngineProcess(tmp_path, "daemon", ["--config", str(cfg), "run"])
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as http:

            async def synced() -> bool:
                return not await _differences(own_pg.url, own_schema, sim)

            async def health_is(code: int) -> dict[str, Any] | None:
                status, body = await get_json(http, healthz)
                return body if status == code else None

            await eventually(synced, within=30, what="the first sync")
            await eventually(lambda: health_is(200), within=10, what="healthy")

            await asyncio.to_thread(own_pg.pg_stop)
            down = await eventually(lambda: health_is(503), within=10, what="503")
            assert "database unavailable" in down["reason"], down
            assert down["database"]["ok"] is False

            # Changes made while the database is away must arrive once it is back.
            sim.mutate("shop-1", orders_changed=4, orders_new=3)
            sim.mutate("shop-2", orders_changed=2, orders_new=5)
            await asyncio.sleep(2)  # a few failed passes and probes
            assert daemon.returncode is None, daemon.output
            _, still_down = await get_json(http, healthz)
            assert still_down["database"]["ok"] is False

            await asyncio.to_thread(own_pg.pg_start)
            await eventually(lambda: health_is(200), within=15, what="healthy again")
            await eventually(synced, within=20, what="the database to catch up")

        daemon.signal(signal.SIGTERM)
        assert await daemon.wait(10) == 0, daemon.output
        assert "database is back" in daemon.output
    finally:
        await daemon.kill()


async def test_daemon_waits_for_postgres_at_startup(
    sim_factory: SimFactory, own_pg: OwnPostgres, own_schema: str, tmp_path: Path
) -> None:
    sim = await sim_factory(SimConfig.default(orders=50, returns=5, shops=1))
    cfg = write_config(
        tmp_path / "config.toml",
        sim,
        db_url=own_pg.url,
        schema=own_schema,
        listen=f"127.0.0.1:{free_port()}",
    )
    await asyncio.to_thread(own_pg.pg_stop)

    # A one-shot command fails at once, saying why.
    rc, _, err = (await run_cli(tmp_path, "once", ["--config", str(cfg), "run", "--once"])).result()
    assert rc == 1, err
    assert "Traceback" not in err and "cannot use Postgres at" in err, err

    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = EngineProcess(
        tmp_path, "daemon", ["--config", str(cfg), "run"], env={"NOTIFY_SOCKET": str(notify.path)}
    )
    try:
        await daemon.start()
        status = await notify.wait_for("STATUS=waiting for Postgres", within=15)
        assert "attempt 1" in status, status
        await notify.wait_for("EXTEND_TIMEOUT_USEC=", within=1)
        await asyncio.sleep(1.5)
        assert daemon.returncode is None, daemon.output
        assert not [f for f in notify.fields() if f == "READY=1"]

        await asyncio.to_thread(own_pg.pg_start)
        await notify.wait_for("READY=1", within=15)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait(10) == 0, daemon.output
        assert "cannot open the database (attempt 1)" in daemon.output
    finally:
        await daemon.kill()
        notify.close()
