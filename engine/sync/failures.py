"""Which exceptions of a stream end the whole pass: only a lost database does (every other
pair would fail the same way, and the daemon's loop waits for it); anything else, a data error
of Postgres included, is that stream's own failure."""

from __future__ import annotations

import asyncpg

from engine.errors import DATABASE_ERRORS

_LOST_CLASSES = ("08", "57")  # connection exception, operator intervention (shutdown)


def database_lost(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        return (getattr(exc, "sqlstate", None) or "")[:2] in _LOST_CLASSES
    if isinstance(exc, asyncpg.exceptions._base.DataError):  # a parameter it cannot encode
        return False
    return isinstance(exc, DATABASE_ERRORS)
