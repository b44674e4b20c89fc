"""Finding and setting aside the records of a page that Postgres will not store.

The diff writers store a page in one set-based statement. When that statement fails for a
reason that belongs to the data (SQLSTATE class 22 "data exception", class 54 "program limit
exceeded", e.g. a key too long for its index, or a parameter the driver cannot encode), the
page is written again by halving: each half in a savepoint, down to the single records that
still fail. Those are set aside in ``rejected_records`` in the same transaction as the rest of
the page and the cursor, so the window moves on (interface.md, "A record that cannot be stored
as sent"). The normal path never comes here: no extra round trip per page or per row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import orjson

from engine.jsonvalue import json_type
from engine.logs import redact
from engine.store.pool import Connection, pg_text

__all__ = ["Rejected", "isolable", "isolate", "json_key", "not_objects", "save_rejected"]

_DATA_CLASSES = ("22", "54")
MAX_RAW_CHARS = 100_000  # what is kept of a rejected record's text (a key can be huge)
MAX_KEY_CHARS = 500


STREAM_OF = {
    "order": "orders",
    "order_line": "orders",
    "return": "returns",
    "return_line": "returns",
}


@dataclass(frozen=True, slots=True)
class Rejected:
    entity: str  # 'order', 'order_line', 'return' or 'return_line'
    entity_key: str | None
    reason: str
    item: Any

    @property
    def stream(self) -> str:
        return STREAM_OF[self.entity]


def not_objects(entity: str, elements: Sequence[Any]) -> list[Rejected]:
    """Elements of a list of records that are not JSON objects: nothing to key or store."""
    return [Rejected(entity, None, f"not a JSON object ({json_type(e)})", e) for e in elements]


def isolable(exc: BaseException) -> bool:
    """True for failures caused by the data sent, which halving the page can find."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _DATA_CLASSES
    # The driver refusing to encode a parameter (asyncpg's client-side DataError, which is
    # also what an encoder raising inside it becomes). Not any TypeError or ValueError: one
    # from our own code is a bug, and taking it for bad data would set whole pages aside in
    # rejected_records; it fails the pass instead, loudly, and the pages are read again.
    return isinstance(exc, asyncpg.exceptions._base.DataError)


def json_key(value: Any, *path: str) -> str | None:
    """Mirrors the SQL ``nullif(item -> a ->> b, '')`` on the payload as stored: None when there
    is no usable key; a U+0000 reads as the U+FFFD Postgres holds instead (pool.without_nul),
    so the engine compares and counts a record under the key its row has."""
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return pg_text(value) or None
    return orjson.dumps(value).decode()


Piece = Sequence[Any]
Row = TypeVar("Row")  # what one write returns (a record of counts)


async def isolate(
    conn: Connection,
    items: list[Any],
    write: Callable[[Connection, list[Any]], Awaitable[Row]],
    single: Callable[[Connection, Any, str], Awaitable[tuple[list[Row], list[Rejected]]]],
) -> tuple[list[Row], list[Rejected]]:
    """Writes ``items`` in as few pieces as the failures allow (inside the caller's
    transaction); ``single`` decides what to do with one record that fails alone."""
    rows: list[Row] = []
    rejected: list[Rejected] = []
    pending: list[list[Any]] = [items]
    while pending:
        piece = pending.pop()
        if not piece:
            continue
        try:
            async with conn.transaction():  # a savepoint inside the caller's transaction
                rows.append(await write(conn, piece))
            continue
        except Exception as exc:
            if not isolable(exc):
                raise
            if len(piece) == 1:
                more_rows, more_rejected = await single(conn, piece[0], _reason(exc))
                rows.extend(more_rows)
                rejected.extend(more_rejected)
                continue
        half = len(piece) // 2
        pending.extend((piece[half:], piece[:half]))
    return rows, rejected


def _reason(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None)
    text = f"{type(exc).__name__}: {exc}"
    return redact(f"{text} (SQLSTATE {state})" if state else text)[:2000]


def record_hash(r: Rejected, raw: str | None = None) -> str:
    """The record's identity in rejected_records (with shop_id and stream)."""
    key = r.entity_key
    # Without a key, the record is its text and its reason (which names the parent order of a
    # line): the same stray element in two orders is two records.
    ident = key if key is not None else f"{r.reason}:{raw or orjson.dumps(r.item).decode()}"
    return hashlib.sha256(f"{r.entity}:{ident}".encode()).hexdigest()


def rejected_ids(shop_id: str, rejected: Sequence[Rejected], entity: str) -> frozenset[str]:
    """The run-wide identities of the records of ``entity`` set aside: a record read twice
    in one run (an overlap, a re-read window) is one record of the run's ``rejected``."""
    return frozenset(
        f"{shop_id}\x00{r.stream}\x00{record_hash(r)}" for r in rejected if r.entity == entity
    )


async def save_rejected(
    conn: Connection, query: str, shop_id: str, rejected: Sequence[Rejected]
) -> None:
    for r in rejected:
        raw = orjson.dumps(r.item).decode()
        key = r.entity_key
        await conn.execute(
            query,
            shop_id,
            r.stream,
            record_hash(r, raw),
            None if key is None else pg_text(key[:MAX_KEY_CHARS]),
            pg_text(r.reason),
            raw.replace("\\u0000", "\\ufffd")[:MAX_RAW_CHARS],
        )
