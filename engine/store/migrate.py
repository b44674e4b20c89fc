"""Applies ``sql/NNNN_*.sql`` in order, each in its own transaction, recorded in
``schema_migrations``.

Every step takes a transaction-scoped advisory lock keyed by the schema name, so concurrent
``temu-sync migrate`` runs queue behind each other and the later ones find nothing to do.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable

import asyncpg

from engine.store.paths import sql_files, sql_root
from engine.store.pool import Connection, quote_ident

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    directory = directory or sql_root()
    found: list[Migration] = []
    seen: set[str] = set()
    for path in sql_files(directory):
        m = _FILE.match(path.name)
        if m is None:
            raise ValueError(f"{path}: migration files are named NNNN_words.sql")
        if m.group(1) in seen:
            raise ValueError(f"{path}: two migrations numbered {m.group(1)}")
        seen.add(m.group(1))
        found.append(Migration(path.name.removesuffix(".sql"), path.read_text(encoding="utf-8")))
    return found


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text        PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    checksum   text
)
"""


# The pool's client-side command timeout is meant for page writes, not for a migration that
# rewrites a large table.
MIGRATION_TIMEOUT_S = 6 * 3600.0


async def _locked_step(conn: Connection, schema: str) -> None:
    """Runs inside a transaction: lock, make sure the schema exists, point search_path at it."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"temu-sync:{schema}")
    # IF NOT EXISTS alone is not safe under concurrency; the lock above makes it so.
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    await conn.execute(f"SET LOCAL search_path TO {quote_ident(schema)}")
    await conn.execute(_BOOKKEEPING)


async def _migrate_conn(conn: Connection, schema: str, migrations: list[Migration]) -> list[str]:
    applied_now: list[str] = []
    for mig in migrations:
        async with conn.transaction():
            # A migration may rewrite a large table: only the lock wait keeps its deadline.
            await conn.execute("SET LOCAL statement_timeout = 0")
            await _locked_step(conn, schema)
            row = await conn.fetchrow(
                "SELECT checksum FROM schema_migrations WHERE name = $1", mig.name
            )
            if row is not None:
                if row["checksum"] not in (None, mig.checksum):
                    log.warning(
                        "migration %s was edited after it was applied to schema %s; "
                        "the database keeps the old version",
                        mig.name,
                        schema,
                    )
                continue
            await conn.execute(mig.sql, timeout=MIGRATION_TIMEOUT_S)
            await conn.execute(
                "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                mig.name,
                mig.checksum,
            )
        log.info("applied migration %s to schema %s", mig.name, schema)
        applied_now.append(mig.name)
    if not migrations:
        async with conn.transaction():
            await _locked_step(conn, schema)
    return applied_now


async def migrate(
    conn_or_pool: asyncpg.Connection | asyncpg.Pool,
    schema: str,
    *,
    migrations: list[Migration] | None = None,
) -> list[str]:
    """Brings ``schema`` up to date; returns the names applied by this call (empty when none)."""
    migs = load_migrations() if migrations is None else migrations
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            return await _migrate_conn(conn, schema, migs)
    return await _migrate_conn(conn_or_pool, schema, migs)


async def applied_migrations(conn: Connection, schema: str) -> list[str]:
    exists = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(schema)}.schema_migrations"
    )
    if not exists:
        return []
    rows = await conn.fetch(
        f"SELECT name FROM {quote_ident(schema)}.schema_migrations ORDER BY name"
    )
    return [r["name"] for r in rows]


async def pending_migrations(conn: Connection | asyncpg.Pool, schema: str) -> list[str]:
    """Migrations this package has that ``schema`` has not applied (read only, no DDL)."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c:
            return await pending_migrations(c, schema)
    applied = set(await applied_migrations(conn, schema))
    return [m.name for m in load_migrations() if m.name not in applied]
