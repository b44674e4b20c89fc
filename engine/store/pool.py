"""asyncpg pool bound to the temu-sync schema, with orjson for json/jsonb."""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Iterable
from typing import Any, cast

import asyncpg
import asyncpg.pool
import orjson

from engine import jsonvalue

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


def pg_text(value: str | None) -> str | None:
    """``value`` as text Postgres accepts: U+0000 (which a text parameter cannot carry; the
    whole statement would fail, and with it the bookkeeping write) becomes U+FFFD. Every text
    parameter that may hold words from outside (a Temu or OC message, an id) goes through it."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def pg_texts(values: Iterable[str]) -> list[str]:
    return [v.replace("\x00", "\ufffd") for v in values]


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + json_bytes(value)


def _decode_jsonb(data: bytes) -> Any:
    # As it was stored: a payload holding 1e400 or an integer past 64 bits (kept exactly on
    # the way in) must not fail the query nor come back as a float.
    return jsonvalue.loads(data[1:])


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
        "json", schema="pg_catalog", encoder=_encode_json, decoder=jsonvalue.loads, format="binary"
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


# Pooled connections that took session state (a session advisory lock) and so need the full
# reset query when they go back to the pool. The others skip it: asyncpg's default reset is a
# round trip on every release (about 0.2 ms; one per page write). Transactions left open are
# rolled back by asyncpg itself either way.
_SESSION_STATE: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()


def holds_session_state(conn: Connection) -> None:
    """Marks ``conn`` (a pooled connection, or the pool's proxy of one) for the full reset when
    it is released: unlock advisory locks, RESET ALL, UNLISTEN, CLOSE ALL."""
    # asyncpg's PoolConnectionProxy keeps the connection there.
    raw = cast(asyncpg.Connection, getattr(conn, "_con", conn))
    _SESSION_STATE.add(raw)


async def _reset_session(conn: asyncpg.Connection) -> None:
    if conn in _SESSION_STATE:
        _SESSION_STATE.discard(conn)
        await conn.execute(conn.get_reset_query())


class DeadlinePool(asyncpg.pool.Pool):
    """A pool whose ``acquire`` (and so every ``pool.fetch*``/``execute``) waits for a free
    connection at most ``acquire_timeout_s``: an exhausted pool (every connection stuck behind
    a lock, say) fails the caller with TimeoutError, which loops record and retry, instead of
    queueing it forever."""

    def __init__(self, *args: Any, acquire_timeout_s: float | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout_s = acquire_timeout_s

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self._acquire_timeout_s if timeout is None else timeout)


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
    """``statement_timeout_s`` also bounds the client's wait for an answer (plus a margin) and
    the wait for a free connection: a holder keeps one at most that long, so a longer wait
    means the pool is wedged, and a server that accepted the connection but never answers
    fails the call too."""
    deadline = (statement_timeout_s + 5.0) if statement_timeout_s > 0 else None
    pool = DeadlinePool(
        url,
        acquire_timeout_s=deadline,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=init_connection,
        reset=_reset_session,
        loop=None,
        server_settings=server_settings(
            schema, statement_timeout_s=statement_timeout_s, lock_timeout_s=lock_timeout_s
        ),
        timeout=connect_timeout_s,
        command_timeout=deadline,
    )
    await pool
    return pool


async def connect(url: str, schema: str) -> asyncpg.Connection:
    """One connection with the same settings as the pool (CLI one-shots, tests)."""
    conn = await asyncpg.connect(url, server_settings=server_settings(schema))
    await init_connection(conn)
    return conn
