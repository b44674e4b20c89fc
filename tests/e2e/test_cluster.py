"""Three `temu-sync run` processes on one database and one simulator with six apps: each app
is synced by exactly one of them, a frozen (SIGSTOP: a partition seen from Postgres) or
killed daemon's apps are taken over within two lease periods, a returning daemon gets its
share back, no app ever exceeds its rate limit, and Postgres ends equal to the truth."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from engine.sim import SimConfig, Simulator
from tests.e2e.daemon_harness import (
    db_differences,
    eventually,
    free_port,
    get_json,
    write_config,
)
from tests.fixtures_proc import EngineProcess
from tests.fixtures_sim import SimFactory

QPS = 4
LEASE_S = 3.0
APPS = 6


def _max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class Cluster:
    def __init__(self, tmp: Path, sim: Simulator, pg_url: str, schema: str) -> None:
        self.tmp, self.sim, self.pg_url, self.schema = tmp, sim, pg_url, schema
        self.procs: dict[str, EngineProcess] = {}
        self.ports: dict[str, int] = {}
        self.starts = Counter[str]()

    async def start(self, name: str) -> None:
        port = free_port()
        self.starts[name] += 1
        cfg = write_config(
            self.tmp / f"{name}.toml",
            self.sim,
            db_url=self.pg_url,
            schema=self.schema,
            listen=f"127.0.0.1:{port}",
            poll_interval_s=0.5,
            extra=f"\n[cluster]\nlease_s = {LEASE_S}\n",
        )
        proc = EngineProcess(self.tmp, f"{name}-{self.starts[name]}", ["--config", str(cfg), "run"])
        await proc.start()
        self.procs[name], self.ports[name] = proc, port

    def pid(self, name: str) -> int:
        proc = self.procs[name].proc
        assert proc is not None
        return proc.pid

    async def owners(self, conn: asyncpg.Connection) -> dict[str, str]:
        """app_key -> daemon name, for live leases only."""
        rows = await conn.fetch(
            f'SELECT app_key, owner FROM "{self.schema}".app_leases WHERE expires_at > now()'
        )
        by_pid = {self.pid(n): n for n in self.procs}
        out = {}
        for r in rows:
            pid = int(r["owner"].rsplit(":", 2)[1])
            out[r["app_key"]] = by_pid.get(pid, f"unknown pid {pid}")
        return out

    async def balanced(self, conn: asyncpg.Connection, names: list[str]) -> dict[str, str] | None:
        owners = await self.owners(conn)
        share = -(-APPS // len(names))
        counts = Counter(owners.values())
        ok = len(owners) == APPS and set(counts) <= set(names)
        return owners if ok and all(c <= share for c in counts.values()) else None


async def test_three_daemons_share_six_apps(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    sim = await sim_factory(
        SimConfig.default(apps=APPS, shops=APPS, orders=40, returns=5, qps=QPS, seed=9)
    )
    cluster = Cluster(tmp_path, sim, pg_url, schema)
    names = ["d0", "d1", "d2"]
    conn = await asyncpg.connect(pg_url)
    figures: dict[str, float] = {}
    try:
        await asyncio.gather(*(cluster.start(n) for n in names))

        async def synced() -> bool:
            return not await db_differences(conn, schema, sim)

        owners = await eventually(
            lambda: cluster.balanced(conn, names), within=30, what="2 apps per daemon"
        )
        await eventually(synced, within=30, what="the first sync")

        # Exactly one process syncs each app: the loops each daemon runs are disjoint and
        # together cover every shop (one shop per app in this simulator).
        async with aiohttp.ClientSession() as http:
            loops: dict[str, set[str]] = {}
            for n in names:
                _, body = await get_json(http, f"http://127.0.0.1:{cluster.ports[n]}/healthz")
                loops[n] = {v["shop"] for k, v in body["loops"].items() if k.startswith("sync:")}
                assert sorted(body["cluster"]["apps"]) == sorted(
                    a for a, o in owners.items() if o == n
                ), body["cluster"]
            assert sum(len(s) for s in loops.values()) == len(set().union(*loops.values())) == APPS

        # d0 freezes (as if cut off from Postgres): its apps move on after its lease expires.
        frozen = {a for a, o in owners.items() if o == "d0"}
        began = time.monotonic()
        cluster.procs["d0"].signal(signal.SIGSTOP)
        moments = {"freeze": time.time()}

        async def taken_over() -> bool:
            now = await cluster.owners(conn)
            return all(now.get(a) in ("d1", "d2") for a in frozen)

        await eventually(taken_over, within=2 * LEASE_S + 2, interval=0.05, what="takeover")
        figures["takeover_after_freeze_s"] = time.monotonic() - began
        for shop in sim.config.shops:
            sim.mutate(shop.shop_id, orders_changed=2, orders_new=1)
        await eventually(synced, within=20, what="changes while d0 is frozen")
        # Thawed, d0 finds its leases gone, stops those loops before sending anything, and
        # gets its share back from the others.
        cluster.procs["d0"].signal(signal.SIGCONT)
        moments["thaw"] = time.time()
        await eventually(lambda: cluster.balanced(conn, names), within=20, what="d0 to rejoin")
        owners = await cluster.owners(conn)
        assert Counter(owners.values())["d0"] == 2, owners

        # d1 is killed outright.
        killed = {a for a, o in owners.items() if o == "d1"}
        began = time.monotonic()
        await cluster.procs["d1"].kill()
        moments["kill"] = time.time()

        async def killed_taken() -> bool:
            now = await cluster.owners(conn)
            return all(now.get(a) in ("d0", "d2") for a in killed)

        await eventually(killed_taken, within=2 * LEASE_S, interval=0.05, what="takeover")
        figures["takeover_after_kill_s"] = time.monotonic() - began
        for shop in sim.config.shops:
            sim.mutate(shop.shop_id, orders_changed=1, orders_new=2)
        await eventually(synced, within=20, what="changes after the kill")

        # A restarted d1 rejoins and takes a share.
        await cluster.start("d1")
        moments["restart"] = time.time()
        await eventually(lambda: cluster.balanced(conn, names), within=20, what="d1 to rejoin")
        for shop in sim.config.shops:
            sim.mutate(shop.shop_id, orders_changed=1, orders_new=1)
        await eventually(synced, within=20, what="the final changes")

        # No app ever went over its limit: counted over every request that reached the
        # simulator, accepted or refused.
        stats: dict[str, Any] = sim.stats()["apps"]
        worst = 0
        for app, st in stats.items():
            # On failure, show when: next to the freeze, the kill or a rebalance.
            assert st["rejected_rate_limit"] == 0, (app, st["rejected_at"], moments)
            assert st["max_accepted_in_1s"] <= QPS, (app, st["max_accepted_in_1s"])
            worst = max(worst, _max_in_any_second(st["accepted_at"] + st["rejected_at"]))
        assert worst <= QPS
        figures["max_requests_in_any_second"] = worst

        # One insert per order and return: nothing written twice despite the handovers.
        dupes = await conn.fetch(
            f"SELECT entity, shop_id, entity_key FROM \"{schema}\".changes WHERE op = 'insert' "
            "GROUP BY 1, 2, 3 HAVING count(*) > 1"
        )
        assert dupes == []

        await asyncio.gather(*(asyncio.to_thread(cluster.procs[n].signal) for n in names))
        codes = await asyncio.gather(*(cluster.procs[n].wait(12) for n in names))
        assert codes == [0, 0, 0], [cluster.procs[n].output for n in names]
        assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".daemons') == 0
        print("cluster figures:", figures)
        for n in names:
            assert "Traceback" not in cluster.procs[n].output, cluster.procs[n].output
    finally:
        for proc in cluster.procs.values():
            if proc.returncode is None:
                proc.signal(signal.SIGCONT)
            await proc.kill()
        await conn.close()
