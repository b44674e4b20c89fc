"""0008 on an existing `changes`: a small table is converted by the migration, a large one by
the resumable three-step procedure, with the sync writing all along; no row is lost."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from engine.store.migrate import load_migrations, migrate
from engine.store.pool import create_pool, quote_ident
from engine.store.retention import ChangesLayout
from tests.fixtures_db import new_schema_name

# Above the 1,000,000 rows 0008 converts in place; TEMU_SYNC_MIGRATION_ROWS for a bigger run.
LARGE = int(os.environ.get("TEMU_SYNC_MIGRATION_ROWS", "1100000"))


@pytest.fixture
async def at_0007(pg_url: str) -> AsyncIterator[asyncpg.Pool]:
    name = new_schema_name()
    conn = await asyncpg.connect(pg_url)
    await migrate(conn, name, migrations=[m for m in load_migrations() if m.name < "0008"])
    pool = await create_pool(pg_url, name, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
        await conn.close()


async def fill(pool: asyncpg.Pool, n: int) -> None:
    await pool.execute(
        """INSERT INTO changes (shop_id, entity, entity_key, op, changed_at)
           SELECT 's' || g % 7, 'order', 'k' || g, 'insert', now() - g * interval '1 second'
           FROM generate_series(1, $1) AS g""",
        n,
    )


async def fingerprint(pool: asyncpg.Pool) -> tuple[int, int, str]:
    row = await pool.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(id), 0) AS s, "
        "md5(string_agg(id || entity_key || changed_at::text, ',' ORDER BY id)) AS h FROM changes"
    )
    assert row is not None
    return int(row["n"]), int(row["s"]), str(row["h"])


async def kind(pool: asyncpg.Pool) -> str:
    return str(
        await pool.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'changes'::regclass")
    )


async def schema_of(pool: asyncpg.Pool) -> str:
    return str(await pool.fetchval("SELECT current_schema()"))


async def test_a_small_table_is_converted_by_the_migration(at_0007: asyncpg.Pool) -> None:
    await fill(at_0007, 5000)
    before = await fingerprint(at_0007)
    assert await migrate(at_0007, await schema_of(at_0007)) != []
    assert await kind(at_0007) == "p"
    assert await fingerprint(at_0007) == before
    # New rows go on with ids above the old ones, into the new partitions.
    await fill(at_0007, 3)
    assert await at_0007.fetchval("SELECT count(*) FROM changes_legacy") == 5000
    assert await at_0007.fetchval(
        "SELECT min(id) FROM changes WHERE entity_key = 'k3' AND id > 5000"
    )


async def test_a_large_table_is_converted_step_by_step_while_rows_are_written(
    at_0007: asyncpg.Pool,
) -> None:
    await fill(at_0007, LARGE)
    await migrate(at_0007, await schema_of(at_0007))
    assert await kind(at_0007) == "r", "too large to convert inside the migration"

    stop = asyncio.Event()
    written = 0

    async def writer() -> None:  # the sync, writing while the procedure runs
        nonlocal written
        while not stop.is_set():
            await fill(at_0007, 10)
            written += 10
            await asyncio.sleep(0.005)

    layout = ChangesLayout(at_0007)
    w = asyncio.create_task(writer())
    t0 = time.monotonic()
    try:
        # A first run is killed while it validates; the next one resumes from there.
        first = asyncio.create_task(layout.convert(1_000_000))
        for _ in range(2000):  # until step 1 has committed
            if await at_0007.fetchval(
                "SELECT count(*) FROM pg_constraint WHERE conname = 'changes_legacy_bound' "
                "AND conrelid = 'changes'::regclass"
            ):
                break
            await asyncio.sleep(0.005)
        # At once: the validation of LARGE rows takes longer than a poll, while a further
        # pause let a fast machine finish the whole conversion before the kill landed.
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await kind(at_0007) == "r"
        steps = await layout.convert(1_000_000)
    finally:
        stop.set()
        await w
    took = time.monotonic() - t0
    # Where the kill landed depends on the machine's load: inside the validation (the resumed
    # run validates, then swaps) or just after it committed (only the swap is left). Either
    # way the second run resumes after the first's committed steps, never from scratch.
    assert [s.step for s in steps] in (["validate", "swap"], ["swap"])
    assert written > 0
    assert await kind(at_0007) == "p"
    n, _, _ = await fingerprint(at_0007)
    assert n == LARGE + written, "every row, old and written meanwhile, is kept"
    longest = max(s.lock_s for s in steps)
    print(
        f"\nconverted {LARGE} rows in {took:.2f} s; longest exclusive lock {longest * 1000:.0f} ms"
    )
    assert longest < 1.0

    # Resumable: nothing is left to do, and new rows land in the new partitions.
    assert await layout.convert(1_000_000) == []
    await fill(at_0007, 5)
    newest = await at_0007.fetch(
        "SELECT tableoid::regclass::text AS t FROM changes ORDER BY id DESC LIMIT 5"
    )
    assert all(r["t"] != "changes_legacy" for r in newest)


async def test_a_swap_rolled_back_never_leaves_writes_refused(at_0007: asyncpg.Pool) -> None:
    """The swap runs in one transaction; when it is rolled back (cancelled, killed, a
    deadline in a later statement), the plain table must still take writes: the id sequence
    may not have moved past the bound its CHECK allows (setval is not transactional). The
    next conversion then finishes, and new ids start past the legacy partition."""
    await fill(at_0007, LARGE)  # too large to convert inside the migration: stays plain
    await migrate(at_0007, await schema_of(at_0007))
    assert await kind(at_0007) == "r"
    layout = ChangesLayout(at_0007)
    async with at_0007.acquire() as conn:
        next_id = await conn.fetchval("SELECT changes_next_id()")
        bound = int(next_id) + 10_000
        await conn.execute(
            "ALTER TABLE changes ADD CONSTRAINT changes_legacy_bound "
            f"CHECK (id < {bound}) NOT VALID"
        )
        await conn.execute("ALTER TABLE changes VALIDATE CONSTRAINT changes_legacy_bound")
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE changes IN ACCESS EXCLUSIVE MODE")
        await conn.execute("SELECT changes_convert($1::bigint, 100000)", bound)
        await tx.rollback()  # as if the swap were cancelled just before its commit
    assert await kind(at_0007) == "r"
    await fill(at_0007, 10)  # the sync writes on: no CHECK violation
    steps = await layout.convert(100_000)
    assert [s.step for s in steps] == ["swap"]
    assert await kind(at_0007) == "p"
    await fill(at_0007, 10)
    newest = await at_0007.fetchval("SELECT max(id) FROM changes")
    assert newest >= bound, "new ids start past the legacy partition"
