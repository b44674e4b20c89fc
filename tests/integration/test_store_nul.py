"""U+0000 in a text parameter: Postgres text cannot hold it, so a message from Temu or OC that
carries one made the bookkeeping write itself fail (the task never finished nor parked, the
stream's error never recorded). Every such write stores U+FFFD in its place."""

from __future__ import annotations

import asyncpg

from engine.store.reconcile_store import ReconcileStore
from engine.store.store import Store

NUL_MESSAGE = "OC said: RMA\x00 refused"
STORED = "OC said: RMA\ufffd refused"


async def test_a_stream_error_with_nul_is_recorded(store: Store) -> None:
    await store.record_error("s1", "orders", "incremental", NUL_MESSAGE)
    (row,) = await store.sync_status(["s1"], ["orders"])
    assert row["last_error"] == STORED and row["failing"]


async def test_a_task_failing_or_parked_or_waiting_with_nul_keeps_its_error(
    store: Store, pool: asyncpg.Pool
) -> None:
    for key in ("fail", "park", "wait"):
        await store.enqueue("label", key, {})
    tasks = {t.dedupe_key: t for t in await store.claim(["label"], limit=5, lease_s=60, owner="w")}
    assert await store.fail(tasks["fail"].id, NUL_MESSAGE, max_attempts=5, backoff_s=60) == (
        "pending"
    )
    assert await store.fail(tasks["park"].id, NUL_MESSAGE, max_attempts=0, backoff_s=0) == "dead"
    assert await ReconcileStore(pool).defer(tasks["wait"].id, NUL_MESSAGE, delay_s=60, owner="w")
    rows = {r["dedupe_key"]: r for r in await store.outbox_tasks()}
    assert {k: (r["state"], r["last_error"]) for k, r in rows.items()} == {
        "fail": ("pending", STORED),
        "park": ("dead", STORED),
        "wait": ("pending", STORED),
    }
