"""webhook_events: stored once per message, claimed by one consumer, retried, pruned."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from engine.store.events import EventStore
from engine.temu.webhooks import ORDER_STATUS, Event, parse_event


def event(sn: str, update: int = 1_760_000_000, ts: str = "1760000000123") -> Event:
    text = f'{{"mallId": 11, "parentOrderSn": "{sn}", "updateTime": {update}}}'
    return parse_event(text, code=ORDER_STATUS, app_key="app", timestamp=ts)


async def test_insert_is_idempotent_and_claims_do_not_overlap(pool: asyncpg.Pool) -> None:
    store = EventStore(pool)
    assert await store.insert(event("PO-1"), "shop-1")
    # Temu's re-send of that message (same content, same x-tm-timestamp) is the same event.
    assert not await store.insert(event("PO-1"), "shop-1")
    assert await store.insert(event("PO-2"), "shop-1")
    assert await pool.fetchval("SELECT count(*) FROM webhook_events") == 2

    first, second = await asyncio.gather(
        store.claim(limit=1, lease_s=30), store.claim(limit=5, lease_s=30)
    )
    claimed = [e.parent_order_sn for e in first + second]
    assert sorted(claimed) == ["PO-1", "PO-2"]
    assert await store.claim(limit=5, lease_s=30) == []
    one = (first + second)[0]
    assert one.update_time is not None and int(one.update_time.timestamp()) == 1_760_000_000
    assert one.payload["parentOrderSn"] == one.parent_order_sn
    assert one.attempts == 1

    done = await store.mark_processed([e.id for e in first + second], "read")
    assert len(done) == 2
    assert await store.summary() == {"pending": 0, "read": 2, "not_found": 0, "gave_up": 0}
    # A duplicate arriving after processing is still not stored again: no second re-read.
    assert not await store.insert(event("PO-1"), "shop-1")
    # The same content in another message (a later timestamp) is another change: stored.
    assert await store.insert(event("PO-1", ts="1760000099999"), "shop-1")


async def test_failures_back_off_then_give_up(pool: asyncpg.Pool) -> None:
    store = EventStore(pool)
    await store.insert(event("PO-9"), "shop-1")
    [e] = await store.claim(limit=5, lease_s=30)
    assert await store.fail([e.id], "boom", backoff_s=60, max_attempts=2) == []
    assert await store.claim(limit=5, lease_s=30) == [], "not due before its backoff"
    await pool.execute("UPDATE webhook_events SET next_attempt_at = now()")
    [again] = await store.claim(limit=5, lease_s=30)
    assert again.attempts == 2
    assert await store.fail([again.id], "boom", backoff_s=0, max_attempts=2) == [again.id]
    assert await store.claim(limit=5, lease_s=30) == []
    assert (await store.summary())["gave_up"] == 1


async def test_expired_claim_is_taken_over(pool: asyncpg.Pool) -> None:
    store = EventStore(pool)
    await store.insert(event("PO-3"), "shop-1")
    assert len(await store.claim(limit=5, lease_s=0.05)) == 1
    await asyncio.sleep(0.1)
    assert len(await store.claim(limit=5, lease_s=30)) == 1


async def test_prune_keeps_unprocessed_and_recent(pool: asyncpg.Pool) -> None:
    store = EventStore(pool)
    for sn in ("PO-a", "PO-b", "PO-c"):
        await store.insert(event(sn), "shop-1")
    claimed = await store.claim(limit=2, lease_s=30)
    await store.mark_processed([e.id for e in claimed], "read")
    await pool.execute(
        "UPDATE webhook_events SET processed_at = now() - interval '10 days' WHERE id = $1",
        claimed[0].id,
    )
    assert await store.prune(7) == 1
    assert await pool.fetchval("SELECT count(*) FROM webhook_events") == 2


async def test_a_slow_database_times_the_insert_out(pool: asyncpg.Pool) -> None:
    store = EventStore(pool)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(TimeoutError):
            await store.insert(event("PO-x"), "shop-1", timeout_s=0.2)
    assert await pool.fetchval("SELECT count(*) FROM webhook_events") == 0
