"""asyncpg pool bound to the temu-sync schema, with orjson for json/jsonb."""

from __future__ import annotations

import logging
import re
from typing import Any

import asyncpg
import asyncpg.pool
import orjson

# What Store and the migration runner accept: a plain connection or one borrowed from a pool.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# jsonb's binary wire format is a version byte (1) followed by the JSON text. Using it lets
# orjson's bytes go to the socket without a str round trip in either direction.
_JSONB_VERSION = b"\x01"


# Postgres text and jsonb cannot hold U+0000 ("unsupported Unicode escape sequence"): one such
# character in one record would fail the whole page's statement, every time. It is stored as
# U+FFFD instead; the lookbehind leaves an escaped backslash followed by "u0000" alone.
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
log = logging.getLogger(__name__)


def json_bytes(value: Any) -> bytes:
    """``value`` as JSON that Postgres accepts (U+0000 replaced by U+FFFD, logged)."""
    return without_nul(orjson.dumps(value))


def without_nul(data: bytes) -> bytes:
    """JSON text with its U+0000 escapes replaced by U+FFFD (logged)."""
    if b"\\u0000" in data:
        data, n = _NUL_ESCAPE.subn(rb"\1\\ufffd", data)
        if n:
            log.warning(
                "replaced %d U+0000 character(s) with U+FFFD: Postgres cannot store "
                "U+0000 in jsonb",
                n,
            )
    return data


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + json_bytes(value)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


def _encode_json(value: Any) -> bytes:
    return json_bytes(value)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Installs the JSON codecs; usable as ``init=`` for pools and on single connections."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        format="binary",
    )
    await conn.set_type_codec(
        "json", schema="pg_catalog", encoder=_encode_json, decoder=orjson.loads, format="binary"
    )


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def server_settings(
    schema: str, *, statement_timeout_s: float = 0.0, lock_timeout_s: float = 0.0
) -> dict[str, str]:
    out = {
        "search_path": quote_ident(schema),
        "application_name": "temu-sync",
        # The diff statements are large but cheap; JIT compiling them costs more than it saves.
        "jit": "off",
    }
    if statement_timeout_s > 0:
        # Every statement and every lock wait has a deadline on the server: a lock held by a
        # psql session or an ALTER fails the write (recorded, retried later) instead of
        # wedging the loop; a transaction left idle is ended too.
        out["statement_timeout"] = f"{int(statement_timeout_s * 1000)}ms"
        out["idle_in_transaction_session_timeout"] = f"{int(statement_timeout_s * 2000)}ms"
    if lock_timeout_s > 0:
        out["lock_timeout"] = f"{int(lock_timeout_s * 1000)}ms"
    return out


async def create_pool(
    url: str,
    schema: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    statement_timeout_s: float = 0.0,
    lock_timeout_s: float = 0.0,
    connect_timeout_s: float = 60.0,
) -> asyncpg.Pool:
    """``statement_timeout_s`` also bounds the client's wait for an answer (plus a margin):
    a server that accepted the connection but never answers fails the call too."""
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        server_settings=server_settings(
            schema, statement_timeout_s=statement_timeout_s, lock_timeout_s=lock_timeout_s
        ),
        init=init_connection,
        timeout=connect_timeout_s,
        command_timeout=(statement_timeout_s + 5.0) if statement_timeout_s > 0 else None,
    )
    assert pool is not None  # only None for a pool created without awaiting
    return pool


async def connect(url: str, schema: str) -> asyncpg.Connection:
    """One connection with the same settings as the pool (CLI one-shots, tests)."""
    conn = await asyncpg.connect(url, server_settings=server_settings(schema))
    await init_connection(conn)
    return conn
