"""What the daemon e2e tests share: a config for a simulator and a test schema, a fake systemd
notify socket, HTTP helpers and a condition poller. Processes run through
tests/fixtures_proc.py."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from engine.sim import Simulator
from tests.fixtures_proc import EngineProcess
from tests.truth import STREAMS, compare, truth_differences


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(
    path: Path,
    sim: Simulator,
    *,
    db_url: str,
    schema: str,
    listen: str,
    poll_interval_s: float = 1.0,
    admin_token: str = "",
    reconciler: bool = True,
    extra: str = "",
    overlap_s: int = 120,
) -> Path:
    start_ts = sim.config.time_range()[0] - 86400
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_ts))
    path.write_text(
        f'[database]\nurl = "{db_url}"\nschema = "{schema}"\ndata_dir = "{path.parent / "data"}"\n'
        "pool_min = 1\npool_max = 4\n\n"
        # OC paced fast: its 5/s default only makes the tests slow, it is not under test.
        + sim.config_toml().replace("[orange_connex]\n", "[orange_connex]\nqps = 200\n", 1)
        + f'\n[sync]\nstart = "{start}"\npoll_interval_s = {poll_interval_s}\n'
        f"overlap_s = {overlap_s}\nsafety_lag_s = 1\n"
        f"returns = {'true' if 'returns' in STREAMS else 'false'}\n\n"
        f"[reconciler]\nenabled = {'true' if reconciler else 'false'}\ninterval_s = 1\n\n"
        f'[http]\nlisten = "{listen}"\nadmin_token = "{admin_token}"\n' + extra
    )
    return path


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.messages
            self.messages.append(data.decode())

    def fields(self) -> list[str]:
        return [f for m in self.drain() for f in m.split("\n")]

    async def wait_for(self, prefix: str, within: float = 20.0) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for f in self.fields():
                if f.startswith(prefix):
                    return f
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {prefix!r} notification within {within} s: {self.messages}")

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@contextlib.asynccontextmanager
async def running_daemon(
    tmp_path: Path, cfg: Path
) -> AsyncIterator[tuple[EngineProcess, NotifySocket]]:
    """`temu-sync run` on ``cfg`` as a subprocess, ready (READY=1 received); stopped with
    SIGTERM when the block ends."""
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = EngineProcess(
        tmp_path, "daemon", ["--config", str(cfg), "run"], env={"NOTIFY_SOCKET": str(notify.path)}
    )
    try:
        await daemon.start()
        await notify.wait_for("READY=1", within=30)
        yield daemon, notify
    finally:
        daemon.signal()
        await daemon.wait(10)
        await daemon.kill()
        notify.close()


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url) as resp:
        body: dict[str, Any] = orjson.loads(await resp.read())
        return resp.status, body


async def get_text(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


async def eventually(
    check: Callable[[], Any], *, within: float = 20.0, interval: float = 0.2, what: str = ""
) -> Any:
    """Awaits ``check()`` until it returns something truthy; the last value on timeout."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = await check()
        except (aiohttp.ClientError, OSError, asyncpg.PostgresError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")
        await asyncio.sleep(interval)


async def db_differences(conn: asyncpg.Connection, schema: str, sim: Simulator) -> list[str]:
    """Where the database differs from the simulator's truth (every table, every shop)."""
    return await truth_differences(conn, schema, sim, streams=STREAMS)


async def behind_cursor_differences(
    conn: asyncpg.Connection, schema: str, sim: Simulator
) -> list[str]:
    """Records the simulator last changed at or before a stream's incremental cursor that are
    missing or stale in Postgres: a cursor must never run ahead of what was stored."""
    rows = await conn.fetch(
        f'SELECT shop_id, stream, position FROM "{schema}".sync_state '
        "WHERE kind = 'incremental' AND position IS NOT NULL"
    )
    problems: list[str] = []
    for r in rows:
        shop, stream, upto = r["shop_id"], r["stream"], int(r["position"].timestamp())
        if stream == "orders":
            truth = {
                o["parentOrderMap"]["parentOrderSn"]: o
                for o in sim.truth_orders(shop)
                if o["parentOrderMap"]["updateTime"] <= upto
            }
            table, key = "orders", "parent_order_sn"
        else:
            truth = {x["parentAfterSalesSn"]: x for x in sim.truth_returns(shop)}
            truth = {k: v for k, v in truth.items() if v["updateAt"] <= upto}
            table, key = "returns", "parent_after_sales_sn"
        stored = await conn.fetch(
            f'SELECT {key} AS k, payload::text AS p FROM "{schema}".{table} '
            f"WHERE shop_id = $1 AND {key} = ANY($2)",
            shop,
            list(truth),
        )
        problems += compare(
            f"{shop} {stream} up to its cursor",
            truth,
            {x["k"]: orjson.loads(x["p"]) for x in stored},
        )
    return problems
