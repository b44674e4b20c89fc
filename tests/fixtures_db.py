"""Database fixtures.

``pg_url`` is ``$TEST_DATABASE_URL`` when set, else one embedded pgserver for the whole session.
Each test gets its own freshly migrated schema (dropped afterwards), so tests never see each
other's rows and can run against a shared server; migrating takes tens of milliseconds, which
is cheaper than keeping a template in sync.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from engine.store.embedded import EmbeddedPostgres
from engine.store.migrate import migrate
from engine.store.pool import create_pool, quote_ident
from engine.store.store import Store


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-pg"), cleanup="delete")
    url = pg.start()
    try:
        yield url
    finally:
        pg.stop()


def new_schema_name() -> str:
    return f"test_{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def schema(pg_url: str) -> AsyncIterator[str]:
    """A unique, migrated schema for this test."""
    name = new_schema_name()
    conn = await asyncpg.connect(pg_url)
    try:
        await migrate(conn, name)
        yield name
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
        await conn.close()


@pytest.fixture
async def pool(pg_url: str, schema: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(pg_url, schema, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def store(pool: asyncpg.Pool) -> Store:
    return Store(pool)
