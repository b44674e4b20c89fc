"""`temu-sync run` as a subprocess: systemd notifications, /healthz, /metrics, a clean SIGTERM
with every cursor committed, and one broken shop that does not hold up the other."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from engine.sim import SimConfig, Simulator
from tests.e2e.daemon_harness import (
    STREAMS,
    NotifySocket,
    behind_cursor_differences,
    db_differences,
    eventually,
    free_port,
    get_json,
    get_text,
    write_config,
)
from tests.fixtures_proc import EngineProcess, run_cli
from tests.fixtures_sim import SimFactory

ORDERS_LIST = "bg.order.list.v2.get"


async def _cursors(conn: asyncpg.Connection, schema: str) -> dict[tuple[str, str], object]:
    rows = await conn.fetch(
        f'SELECT shop_id, stream, position FROM "{schema}".sync_state '
        "WHERE kind = 'incremental' AND position IS NOT NULL"
    )
    return {(r["shop_id"], r["stream"]): r["position"] for r in rows}


async def _successes(conn: asyncpg.Connection, schema: str) -> dict[tuple[str, str], Any]:
    """When each stream's last pass succeeded (Postgres's clock)."""
    rows = await conn.fetch(
        f'SELECT shop_id, stream, last_success_at FROM "{schema}".sync_state '
        "WHERE kind = 'incremental'"
    )
    return {(r["shop_id"], r["stream"]): r["last_success_at"] for r in rows}


async def test_daemon_lifecycle(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    sim = await sim_factory(SimConfig.default(orders=150, returns=30, shops=2))
    port = free_port()
    # No overlap: a cursor ahead of what was stored would lose records for good.
    cfg = write_config(
        tmp_path / "config.toml",
        sim,
        db_url=pg_url,
        schema=schema,
        listen=f"127.0.0.1:{port}",
        overlap_s=0,
    )
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = EngineProcess(
        tmp_path,
        "daemon",
        ["--config", str(cfg), "run"],
        env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"},
    )
    base = f"http://127.0.0.1:{port}"
    conn = await asyncpg.connect(pg_url)
    try:
        await daemon.start()
        await notify.wait_for("READY=1", within=30)
        await notify.wait_for("WATCHDOG=1", within=5)
        status = await notify.wait_for("STATUS=", within=5)
        assert "2 shops" in status and "streams ok" in status, status

        async with aiohttp.ClientSession() as http:
            await eventually(
                lambda: _synced(conn, schema, sim),
                within=30,
                what="the first sync to match the simulator",
            )
            code, health = await get_json(http, f"{base}/healthz")
            assert code == 200, health
            assert health["status"] == "ok" and health["database"]["ok"] is True
            assert len([n for n in health["loops"] if n.startswith("sync:")]) == 2 * len(STREAMS)

            lag = 'temu_sync_cursor_lag_seconds{shop="shop-1",stream="orders"}'

            async def gauges_refreshed() -> str | None:
                text = await get_text(http, f"{base}/metrics")
                return text if lag in text else None

            # Gauges from Postgres are refreshed by the monitor's next round.
            metrics = await eventually(gauges_refreshed, within=5, what="cursor lag gauge")
            assert 'temu_sync_requests_total{api_type="bg.order.list.v2.get"' in metrics
            assert 'temu_sync_rows_total{entity="order",op="inserted"} 300.0' in metrics
            assert 'temu_sync_outbox_tasks{state="dead"} 0.0' in metrics
            # Nothing set aside: each configured shop and stream reads 0, not absent.
            for shop in ("shop-1", "shop-2"):
                for stream in STREAMS:
                    assert (
                        f'temu_sync_rejected_records{{shop="{shop}",stream="{stream}"}} 0.0'
                        in metrics
                    ), metrics[-3000:]
            assert "temu_sync_pace_requests_per_second" in metrics
            # Present per configured app (0 unless Temu answered 4000004), not only after a hit.
            assert re.search(
                r'^temu_sync_rate_limited_total\{app_key="sim-app-1"\} ', metrics, re.M
            )
            # The daemon prunes on its schedule ([retention]): its first run is at start.
            last_prune = re.search(
                r"^temu_sync_retention_last_run_timestamp_seconds (\S+)$", metrics, re.M
            )
            assert last_prune is not None and float(last_prune.group(1)) > 0, last_prune
            assert "process_resident_memory_bytes" in metrics
            assert "temu_sync_build_info{" in metrics

            # A change made while the daemon runs arrives within a few polls.
            sim.mutate("shop-2", orders_changed=3, orders_new=2)
            await eventually(lambda: _synced(conn, schema, sim), within=15, what="mutations")

        # Several status updates were sent, each one line.
        assert sum(f.startswith("STATUS=") for f in notify.fields()) >= 2

        # SIGTERM while a pass is in flight (its request held at the simulator): the pass
        # finishes within the grace and commits; nothing behind any cursor is missing.
        before = await _cursors(conn, schema)
        await _hold_a_pass_in_flight(sim, "shop-1")
        held = await _successes(conn, schema)
        began = time.monotonic()
        daemon.signal(signal.SIGTERM)
        await notify.wait_for("STOPPING=1", within=5)
        sim.release_requests()
        rc = await daemon.wait(10)
        took = time.monotonic() - began
        assert rc == 0, daemon.output
        assert took < 10
        after = await _cursors(conn, schema)
        assert set(after) == {(s, t) for s in ("shop-1", "shop-2") for t in STREAMS}
        assert all(after[k] >= before[k] for k in before), (before, after)
        assert await behind_cursor_differences(conn, schema, sim) == []
        # The held pass was not cut off: it finished (and committed) after its request was
        # released. (Its cursor may not move: two passes can end in the same second.)
        finished = await _successes(conn, schema)
        assert any(finished[k] > held[k] for k in held), f"{held}\n{finished}"
        assert "Traceback" not in daemon.output, daemon.output
    finally:
        await daemon.kill()
        notify.close()
        await conn.close()


async def _synced(conn: asyncpg.Connection, schema: str, sim: Simulator) -> bool:
    diffs = await db_differences(conn, schema, sim)
    if diffs:
        print("differences:", diffs)
    return not diffs


async def _hold_a_pass_in_flight(sim: Simulator, shop: str) -> None:
    """Changes ``shop``, then holds every request at the simulator and waits until an orders
    sync pass's list request is held (only sync passes list orders; the reconciler lists
    returns too): from then on that pass is in flight and cannot commit its window until
    released (its cursor moves only after its request is answered)."""
    sim.mutate(shop, orders_changed=2, orders_new=2)
    sim.hold_requests()
    deadline = time.monotonic() + 20
    while not sim.held_requests(ORDERS_LIST):
        assert time.monotonic() < deadline, "no pass started within 20 s"
        await asyncio.sleep(0.02)


async def test_second_signal_exits_at_once(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    sim = await sim_factory(SimConfig.default(orders=50, returns=5, shops=1))
    port = free_port()
    cfg = write_config(
        tmp_path / "config.toml",
        sim,
        db_url=pg_url,
        schema=schema,
        listen=f"127.0.0.1:{port}",
        overlap_s=0,
    )
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = EngineProcess(
        tmp_path, "daemon", ["--config", str(cfg), "run"], env={"NOTIFY_SOCKET": str(notify.path)}
    )
    conn = await asyncpg.connect(pg_url)
    try:
        await daemon.start()
        await notify.wait_for("READY=1", within=30)
        await eventually(lambda: _synced(conn, schema, sim), within=30, what="the first sync")
        before = await _cursors(conn, schema)
        # A pass is in flight for certain (its request held), so the first SIGTERM has
        # something to wait for; the second must not wait for it.
        await _hold_a_pass_in_flight(sim, "shop-1")
        daemon.signal(signal.SIGTERM)
        await notify.wait_for("STOPPING=1", within=5)
        began = time.monotonic()
        daemon.signal(signal.SIGTERM)
        rc = await daemon.wait(5)
        assert rc == 128 + signal.SIGTERM, daemon.output  # 143: "terminated by the operator"
        assert time.monotonic() - began < 1.5
        # Exiting at once never commits half a pass: no cursor ahead of what was stored.
        after = await _cursors(conn, schema)
        assert all(after[k] >= before[k] for k in before), (before, after)
        assert await behind_cursor_differences(conn, schema, sim) == []
    finally:
        sim.release_requests()
        await daemon.kill()
        notify.close()
        await conn.close()


async def test_one_broken_shop(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    sim = await sim_factory(SimConfig.default(orders=120, returns=20, shops=2))
    sim.revoke_token("sim-token-shop-2")
    port = free_port()
    cfg = write_config(
        tmp_path / "config.toml", sim, db_url=pg_url, schema=schema, listen=f"127.0.0.1:{port}"
    )
    base = f"http://127.0.0.1:{port}"
    daemon = EngineProcess(tmp_path, "daemon", ["--config", str(cfg), "run"])
    conn = await asyncpg.connect(pg_url)
    try:
        await daemon.start()
        async with aiohttp.ClientSession() as http:

            async def shop2_failing() -> bool:
                _, body = await get_json(http, f"{base}/healthz")
                # Sync loops appear once the daemon holds its app's lease, a moment after
                # /healthz starts answering.
                loop = body.get("loops", {}).get("sync:shop-2:orders")
                return bool(loop and loop["failing"])

            await eventually(shop2_failing, within=30, what="shop-2 to be reported failing")
            code, body = await get_json(http, f"{base}/healthz")
            loop = body["loops"]["sync:shop-2:orders"]
            assert "3000030" in loop["last_error"] or "token" in loop["last_error"].lower(), loop
            assert "sync:shop-2:orders" in body["failing"]
            # Not stale yet: one failing shop is reported, not (yet) an outage.
            assert code == 200

            # The healthy shop keeps syncing, changes included.
            sim.mutate("shop-1", orders_changed=2, orders_new=3)

            async def shop1_current() -> bool:
                diffs = await db_differences(conn, schema, sim)
                return not [d for d in diffs if d.startswith("shop-1")]

            await eventually(shop1_current, within=20, what="shop-1 to match the simulator")
            metrics = await get_text(http, f"{base}/metrics")
            assert 'temu_sync_loop_errors_total{loop="sync:shop-2:orders"}' in metrics

        rc, out, err = (
            await run_cli(tmp_path, "status", ["--config", str(cfg), "status", "--json"])
        ).result()
        assert rc == 0, err
        doc = orjson.loads(out.strip().splitlines()[-1])
        by_key = {(s["shop_id"], s["stream"], s["kind"]): s for s in doc["streams"]}
        broken = by_key[("shop-2", "orders", "incremental")]
        assert broken["failing"] is True and broken["last_error"], broken
        healthy = by_key[("shop-1", "orders", "incremental")]
        assert healthy["failing"] is False and healthy["last_success_at"], healthy

        rc, out, err = (
            await run_cli(tmp_path, "status-text", ["--config", str(cfg), "status"])
        ).result()
        assert rc == 0, err
        shop2 = [line for line in out.splitlines() if line.startswith("shop-2") and "incr" in line]
        assert shop2 and all("FAILING: " in line for line in shop2), out
        assert re.fullmatch(
            r"outbox: \d+ pending, \d+ running, \d+ done, 0 dead", out.splitlines()[-1]
        )

        daemon.signal(signal.SIGTERM)
        assert await daemon.wait(10) == 0, daemon.output

        rc, out, err = (
            await run_cli(tmp_path, "once", ["--config", str(cfg), "run", "--once", "--json"])
        ).result()
        assert rc == 3, out + err
        assert orjson.loads(out.strip().splitlines()[-1])["shops_failed"] == ["shop-2"]
    finally:
        await daemon.kill()
        await conn.close()


async def test_a_stopped_shop_resumes_on_its_own_once_its_token_works(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    """README: a stopped shop is not abandoned; once the seller re-authorises (the same token
    works again) its loop's next probe resumes it, with no restart."""
    sim = await sim_factory(SimConfig.default(orders=60, returns=10, shops=2))
    sim.revoke_token("sim-token-shop-2")
    port = free_port()
    cfg = write_config(
        tmp_path / "config.toml", sim, db_url=pg_url, schema=schema, listen=f"127.0.0.1:{port}"
    )
    base = f"http://127.0.0.1:{port}"
    daemon = EngineProcess(tmp_path, "daemon", ["--config", str(cfg), "run"])
    conn = await asyncpg.connect(pg_url)
    try:
        await daemon.start()
        async with aiohttp.ClientSession() as http:

            async def shop2_loops() -> dict[str, Any]:
                _, body = await get_json(http, f"{base}/healthz")
                loops = body.get("loops", {})
                return {k: v for k, v in loops.items() if k.startswith("sync:shop-2:")}

            async def shop2_failing() -> bool:
                loops = await shop2_loops()
                return len(loops) == len(STREAMS) and all(v["failing"] for v in loops.values())

            await eventually(shop2_failing, within=30, what="shop-2 to be reported failing")
            assert [d for d in await db_differences(conn, schema, sim) if d.startswith("shop-2")]
            sim.unrevoke_token("sim-token-shop-2")

            async def shop2_back() -> bool:
                loops = await shop2_loops()
                return bool(loops) and not any(v["failing"] for v in loops.values())

            # The loop backs off 1, 2, 4 ... s from its first failure: its next probes come soon.
            await eventually(shop2_back, within=30, what="shop-2 to recover")
            await eventually(lambda: _synced(conn, schema, sim), within=30, what="shop-2 synced")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait(10) == 0, daemon.output
    finally:
        await daemon.kill()
        await conn.close()
