"""Several processes sharing one database refresh Orange Connex's rotating token only once.

OC rotates the refresh token on every refresh and refuses the old one, so two daemons that
refresh at the same moment would lock one of them out. The Postgres token store serialises the
read-then-refresh across processes (an advisory lock); here two independent clients (each with
its own session and in-process lock, as two daemons would have) race on one expired token.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest

from engine.app.sim_settings import settings_for_simulator
from engine.oc.client import OCClient
from engine.reconcile.oc_rmas import PgTokenStore
from engine.sim.config import SimConfig
from engine.store.pool import create_pool, holds_session_state
from engine.store.store import Store
from tests.fixtures_sim import SimFactory


async def test_two_clients_share_one_refresh(
    sim_factory: SimFactory, store: Store, pg_url: str, schema: str
) -> None:
    config = SimConfig.default(orders=10, returns=20, shops=1, oc_token_ttl_s=3600)
    sim = await sim_factory(config)
    settings = settings_for_simulator(sim, config, database_url=pg_url, schema=schema)
    sn = sim.truth_returns("shop-1")[0]["parentAfterSalesSn"]
    async with aiohttp.ClientSession() as s1, aiohttp.ClientSession() as s2:
        clients = [OCClient(s, settings.orange_connex, PgTokenStore(store)) for s in (s1, s2)]
        await asyncio.gather(*(c.query_orders(sn) for c in clients for _ in range(3)))
        assert sim.stats(arrivals=False)["oc"]["refreshes"] == 1

        # Both tokens expire; both clients notice at once; still one refresh, nobody locked out.
        sim.expire_oc_tokens()
        await asyncio.gather(*(c.query_orders(sn) for c in clients for _ in range(3)))
        assert sim.stats(arrivals=False)["oc"]["refreshes"] == 2
    stored = await store.get_oc_tokens(config.oc_client_id)
    assert stored is not None and stored.refresh_token != config.oc_refresh_token


async def test_refresh_needs_only_the_connection_holding_its_lock(pg_url: str, schema: str) -> None:
    """Inside the lock, the token reads and writes ride on the lock's connection: with a pool
    of one (every other connection busy elsewhere) a refresh still completes instead of
    waiting for a second connection that never frees up."""
    pool = await create_pool(pg_url, schema, min_size=1, max_size=1, statement_timeout_s=1.0)
    try:
        store = Store(pool)
        exp = datetime.now(UTC) + timedelta(hours=1)
        async with asyncio.timeout(10):
            async with store.oc_token_lock("cid"):
                assert await store.get_oc_tokens("cid") is None
                await store.save_oc_tokens("cid", "RT-1", "AT-1", exp)
                again = await store.get_oc_tokens("cid")
        assert again is not None and again.refresh_token == "RT-1"
        # Outside the lock the pool is used again (and the lock was released).
        assert (await store.get_oc_tokens("cid")) is not None
        assert await pool.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", "temu_sync.oc_tokens:cid"
        )
    finally:
        await pool.close()


async def test_session_state_is_reset_only_where_it_was_taken(pg_url: str, schema: str) -> None:
    """Pooled connections skip the reset round trip on release, except those marked as
    holding session state (the token lock marks its own): a lock whose unlock never ran
    (cancelled) must not stay with the pooled session, or every other process would wait for
    it until that connection closed."""
    pool = await create_pool(pg_url, schema, min_size=1, max_size=1)
    other = await asyncpg.connect(pg_url)
    probe = "SELECT pg_try_advisory_lock(42)"
    try:
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock(42)")
            await conn.execute("SET work_mem = '7MB'")
        async with pool.acquire() as conn:
            # Not marked: released as it was (this is why the token lock marks its own).
            assert await conn.fetchval("SHOW work_mem") == "7MB"
            assert await other.fetchval(probe) is False
            holds_session_state(conn)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") != "7MB"
        assert await other.fetchval(probe) is True
    finally:
        await other.close()
        await pool.close()


async def test_the_token_lock_is_released_even_when_its_unlock_is_not(
    pg_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = await create_pool(pg_url, schema, min_size=1, max_size=1)
    other = await asyncpg.connect(pg_url)
    store = Store(pool)
    try:
        with pytest.raises(RuntimeError, match="inside"):
            async with store.oc_token_lock("cid"):
                # The unlock does not happen (as when cancelled before it ran).
                monkeypatch.setattr("engine.store.store._TOKEN_UNLOCK", "SELECT $1::text")
                raise RuntimeError("inside")
        probe = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
        assert await other.fetchval(probe, "temu_sync.oc_tokens:cid") is True
    finally:
        await other.close()
        await pool.close()
