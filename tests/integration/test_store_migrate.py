"""Migrations: concurrency, idempotence, and that replaying them gives the expected schema."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg

from engine.store.migrate import applied_migrations, load_migrations, migrate
from engine.store.pool import quote_ident
from tests.fixtures_db import new_schema_name

# The repository copy (written by UPDATE_SCHEMA_SNAPSHOT=1), not the package data.
SNAPSHOT = Path(__file__).parents[2] / "sql" / "schema.snapshot"


async def catalog(conn: asyncpg.Connection, schema: str) -> str:
    """A stable text description of everything a migration can create in ``schema``."""
    parts: list[str] = []
    q = {
        "column": """
            SELECT table_name || '.' || column_name || ' ' || data_type
                   || CASE WHEN data_type = 'ARRAY' THEN ' ' || udt_name ELSE '' END
                   || CASE WHEN is_nullable = 'NO' THEN ' NOT NULL' ELSE '' END
                   || coalesce(' DEFAULT ' ||
                        regexp_replace(column_default, '"?' || $1 || '"?\\.', '', 'g'), '')
            FROM information_schema.columns WHERE table_schema = $1
            ORDER BY table_name, ordinal_position""",
        "constraint": """
            SELECT c.conrelid::regclass::text || ' ' || c.conname || ' '
                   || pg_get_constraintdef(c.oid)
            FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
            WHERE n.nspname = $1 ORDER BY 1""",
        "index": """
            SELECT indexname || ' ' || regexp_replace(indexdef, '"?' || $1 || '"?\\.', '', 'g')
            FROM pg_indexes WHERE schemaname = $1 ORDER BY 1""",
        "function": """
            SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') '
                   || md5(p.prosrc)
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = $1 ORDER BY 1""",
        "view": """
            SELECT viewname || ' ' || md5(definition)
            FROM pg_views WHERE schemaname = $1 ORDER BY 1""",
        "reloptions": """
            SELECT c.relname || ' ' || array_to_string(c.reloptions, ',')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.reloptions IS NOT NULL ORDER BY 1""",
        "status_map": None,
    }
    await conn.execute(f"SET search_path TO {quote_ident(schema)}")
    for kind, sql in q.items():
        if sql is None:
            rows = await conn.fetch(
                "SELECT temu_status || ' ' || status FROM return_status_map ORDER BY temu_status"
            )
        else:
            rows = await conn.fetch(sql, schema)
        parts += [f"{kind} {r[0]}" for r in rows]
    await conn.execute("RESET search_path")
    return "\n".join(parts) + "\n"


async def test_replayed_migrations_match_the_snapshot(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    name = new_schema_name()
    try:
        assert await migrate(conn, name) == [m.name for m in load_migrations()]
        got = await catalog(conn, name)
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
        await conn.close()
    if os.environ.get("UPDATE_SCHEMA_SNAPSHOT"):
        SNAPSHOT.write_text(got)
    # When this fails after adding a migration: rerun with UPDATE_SCHEMA_SNAPSHOT=1 and review
    # the diff of sql/schema.snapshot like any other change.
    assert got == SNAPSHOT.read_text()


async def test_migrate_is_idempotent(pg_url: str, schema: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        before = await catalog(conn, schema)
        assert await migrate(conn, schema) == []
        assert await catalog(conn, schema) == before
        assert await applied_migrations(conn, schema) == [m.name for m in load_migrations()]
    finally:
        await conn.close()


async def test_concurrent_migrate_runs_apply_each_migration_once(pg_url: str) -> None:
    name = new_schema_name()
    conns = [await asyncpg.connect(pg_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c, name) for c in conns))
        applied = [n for r in results for n in r]
        assert sorted(applied) == [m.name for m in load_migrations()]
        assert await applied_migrations(conns[0], name) == [m.name for m in load_migrations()]
    finally:
        await conns[0].execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
        for c in conns:
            await c.close()


async def test_migrations_do_not_name_the_schema() -> None:
    for m in load_migrations():
        assert "temu_sync" not in m.sql, m.name


async def test_failed_migration_leaves_nothing_behind(pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE b (x int); SELECT 1/0;")
    migs = load_migrations(tmp_path)
    name = new_schema_name()
    conn = await asyncpg.connect(pg_url)
    try:
        try:
            await migrate(conn, name, migrations=migs)
            raise AssertionError("expected division by zero")
        except asyncpg.DivisionByZeroError:
            pass
        assert await applied_migrations(conn, name) == ["0001_ok"]
        assert await conn.fetchval("SELECT to_regclass($1)", f"{name}.b") is None
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
        await conn.close()
