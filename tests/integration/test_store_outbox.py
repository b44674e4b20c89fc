"""Outbox primitives: idempotent enqueue, SKIP LOCKED claims, leases, retries, dead tasks."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from engine.store.migrate import migrate
from engine.store.pool import connect, quote_ident
from engine.store.store import Store
from tests.fixtures_db import new_schema_name


async def test_enqueue_is_idempotent_and_notifies_its_own_schema(
    store: Store, pool: asyncpg.Pool, pg_url: str, schema: str
) -> None:
    # Channels are database-wide: other test sessions on the same server notify too, so this
    # test's task kind is its own and only that kind is counted. Another schema's daemon
    # (listening on its own schema's channel) must not be woken by this schema's task.
    kind = f"label_{uuid.uuid4().hex[:8]}"
    heard: list[str] = []
    elsewhere: list[str] = []
    other = new_schema_name()
    setup = await asyncpg.connect(pg_url)
    await migrate(setup, other)
    listener = await connect(pg_url, schema)
    neighbour = await connect(pg_url, other)
    try:
        channel = await listener.fetchval("SELECT outbox_channel()")
        assert channel != await neighbour.fetchval("SELECT outbox_channel()")
        await listener.add_listener(channel, lambda *a: heard.append(a[3]))
        await neighbour.add_listener(
            await neighbour.fetchval("SELECT outbox_channel()"),
            lambda *a: elsewhere.append(a[3]),
        )
        assert await store.enqueue(kind, "label:R-1", {"sn": "R-1", "ü": [1]}, shop_id="s")
        assert not await store.enqueue(kind, "label:R-1", {"other": True})
        for _ in range(50):
            if kind in heard:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # a second notification would have arrived by now
    finally:
        await listener.close()
        await neighbour.close()
        await setup.execute(f"DROP SCHEMA {quote_ident(other)} CASCADE")
        await setup.close()
    assert [k for k in heard if k == kind] == [kind]
    assert kind not in elsewhere
    (task,) = await store.outbox_tasks()
    assert task["payload"] == {"sn": "R-1", "ü": [1]} and task["state"] == "pending"
    assert task["shop_id"] == "s" and task["attempts"] == 0


async def test_concurrent_claimers_never_share_a_task(store: Store, pool: asyncpg.Pool) -> None:
    for i in range(200):
        await store.enqueue("label", f"k{i}", {"i": i})
    await store.enqueue("oc", "other-kind", {})

    async def claimer(name: str) -> list[int]:
        got: list[int] = []
        while True:
            tasks = await store.claim(["label"], limit=7, lease_s=60, owner=name)
            if not tasks:
                return got
            got += [t.id for t in tasks]
            assert all(t.owner == name and t.attempts == 1 for t in tasks)
            # Working on what it claimed, as a worker does: the others claim meanwhile (without
            # it, on a loaded machine one claimer could drain the queue before the others ran).
            await asyncio.sleep(0.005)

    a, b, c = await asyncio.gather(claimer("a"), claimer("b"), claimer("c"))
    assert len(a) + len(b) + len(c) == 200
    assert len(set(a) | set(b) | set(c)) == 200
    assert sum(1 for got in (a, b, c) if got) >= 2  # they really ran concurrently
    assert len(await store.outbox_tasks("running")) == 200
    assert len(await store.outbox_tasks("pending")) == 1


async def test_skip_locked_while_a_claim_transaction_is_open(
    store: Store, pool: asyncpg.Pool
) -> None:
    await store.enqueue("label", "k1", {})
    await store.enqueue("label", "k2", {})
    async with pool.acquire() as conn, conn.transaction():
        locked = await conn.fetchval("SELECT id FROM outbox ORDER BY id LIMIT 1 FOR UPDATE")
        tasks = await asyncio.wait_for(
            store.claim(["label"], limit=10, lease_s=60, owner="w"), timeout=2
        )
    assert [t.id for t in tasks] == [locked + 1]


async def test_lease_expiry_allows_reclaim(store: Store, pool: asyncpg.Pool) -> None:
    await store.enqueue("label", "k", {"x": 1})
    (t1,) = await store.claim(["label"], limit=5, lease_s=60, owner="dead-worker")
    assert await store.claim(["label"], limit=5, lease_s=60, owner="w2") == []
    # The lease runs out (moved into the past rather than slept through: no sub-second race
    # with the database round trips).
    await pool.execute("UPDATE outbox SET lease_expires_at = now() - interval '1 millisecond'")
    (t2,) = await store.claim(["label"], limit=5, lease_s=60, owner="w2")
    assert t2.id == t1.id and t2.attempts == 2 and t2.owner == "w2"
    # The worker that lost its lease can no longer finish the task.
    assert not await store.complete(t1.id, {"late": True}, owner="dead-worker")
    assert await store.fail(t1.id, "late", max_attempts=5, backoff_s=0, owner="dead-worker") is None
    assert await store.complete(t2.id, {"ok": True}, owner="w2")
    (done,) = await store.outbox_tasks("done")
    assert done["result"] == {"ok": True} and done["lease_expires_at"] is None
    assert not await store.complete(t2.id)  # already done


async def test_fail_backs_off_then_dies(store: Store, pool: asyncpg.Pool) -> None:
    await store.enqueue("label", "k", {})
    states = []
    for attempt in range(1, 4):
        (t,) = await store.claim(["label"], limit=1, lease_s=60, owner="w")
        assert t.attempts == attempt
        states.append(await store.fail(t.id, f"err {attempt}", max_attempts=3, backoff_s=0))
    assert states == ["pending", "pending", "dead"]
    assert await store.claim(["label"], limit=1, lease_s=60, owner="w") == []
    summary = await store.outbox_summary()
    assert summary["dead"] == 1 and summary["pending"] == 0 and summary["done"] == 0
    assert summary["oldest_dead_error"] == "err 3" and summary["oldest_dead_key"] == "k"


async def test_backoff_delays_the_next_claim(store: Store) -> None:
    await store.enqueue("label", "k", {})
    (t,) = await store.claim(["label"], limit=1, lease_s=60, owner="w")
    assert await store.fail(t.id, "busy", max_attempts=5, backoff_s=3600) == "pending"
    assert await store.claim(["label"], limit=1, lease_s=60, owner="w") == []
    (row,) = await store.outbox_tasks()
    assert row["last_error"] == "busy" and row["owner"] == "w"
    summary = await store.outbox_summary()
    assert summary["pending"] == 1 and summary["oldest_dead_error"] is None
