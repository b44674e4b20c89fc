"""Every wait has a deadline and health tells the truth while the daemon waits: the HTTP
server is up before Postgres answers (/livez 200, /healthz 503 saying what it waits for);
one-shot commands against a server that accepts the connection but never answers fail
within their timeout with a clear message."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from engine.sim import SimConfig
from tests.e2e.daemon_harness import eventually, free_port, get_json, write_config
from tests.fixtures_proc import EngineProcess
from tests.fixtures_sim import SimFactory


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts TCP connections and reads, never answers (a stalled or black-holed Postgres)."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        for w in held:
            w.close()
        server.close()


async def test_http_answers_before_postgres_does(
    sim_factory: SimFactory, schema: str, tmp_path: Path
) -> None:
    sim = await sim_factory(SimConfig.default(orders=10, returns=0, shops=1))
    async with silent_server() as pg_port:
        port = free_port()
        cfg = write_config(
            tmp_path / "config.toml",
            sim,
            db_url=f"postgresql://postgres@127.0.0.1:{pg_port}/postgres",
            schema=schema,
            listen=f"127.0.0.1:{port}",
        )
        text = cfg.read_text().replace("pool_max = 4\n", "pool_max = 4\nconnect_timeout_s = 1\n")
        cfg.write_text(text)
        daemon = EngineProcess(tmp_path, "daemon", ["--config", str(cfg), "run"])
        await daemon.start()
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:

                async def live() -> bool:
                    status, _ = await get_json(http, f"{base}/livez")
                    return status == 200

                await eventually(live, within=20, what="/livez")

                async def tried() -> bool:
                    return "cannot open the database" in daemon.output

                # The connect attempt has its deadline (1 s here) and is retried.
                await eventually(tried, within=20, what="a failed connect attempt")
                status, _ = await get_json(http, f"{base}/livez")
                assert status == 200
                status, body = await get_json(http, f"{base}/healthz")
                assert status == 503, body
                assert "waiting for Postgres" in str(body), body
                # The admin API says it is starting rather than refusing the connection.
                async with http.post(f"{base}/returns/RA-1/fulfillment", json={}) as resp:
                    assert resp.status in (403, 503)
        finally:
            if daemon.returncode is None:
                daemon.signal(signal.SIGTERM)
                assert await daemon.wait(15) == 0, daemon.output


async def test_one_shot_fails_in_time_on_a_server_that_never_answers(
    sim_factory: SimFactory, schema: str, tmp_path: Path
) -> None:
    sim = await sim_factory(SimConfig.default(orders=10, returns=0, shops=1))
    async with silent_server() as pg_port:
        cfg = write_config(
            tmp_path / "config.toml",
            sim,
            db_url=f"postgresql://postgres@127.0.0.1:{pg_port}/postgres",
            schema=schema,
            listen="",
        )
        text = cfg.read_text().replace("pool_max = 4\n", "pool_max = 4\nconnect_timeout_s = 2\n")
        cfg.write_text(text)
        cli = EngineProcess(tmp_path, "once", ["--config", str(cfg), "run", "--once"])
        began = time.monotonic()
        await cli.start()
        rc = await cli.wait(30)
        took = time.monotonic() - began
    assert rc == 1, cli.output
    assert took < 20, took
    assert f"cannot use Postgres at 127.0.0.1:{pg_port}/postgres" in cli.output, cli.output


def test_silent_server_really_accepts() -> None:
    # The double above must accept connections (else the tests prove only "refused").
    async def probe() -> None:
        async with silent_server() as port:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass

    asyncio.run(probe())
