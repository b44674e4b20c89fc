"""Postgres layer: pool, embedded server, migrations and the Store (diff writer, cursors,
outbox, status). SQL lives in the repository's ``sql/`` directory."""

from engine.store.embedded import EmbeddedPostgres
from engine.store.migrate import migrate
from engine.store.outbox import Task
from engine.store.pool import create_pool
from engine.store.store import (
    CursorAdvance,
    DiffCounts,
    OcTokens,
    ReturnsWrite,
    Store,
)

__all__ = [
    "CursorAdvance",
    "DiffCounts",
    "EmbeddedPostgres",
    "OcTokens",
    "ReturnsWrite",
    "Store",
    "Task",
    "create_pool",
    "migrate",
]
