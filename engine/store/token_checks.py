"""Per shop, the last answer of ``bg.open.accesstoken.info.get`` and when it was received;
and the last check Temu refused (the shop counts as tried though its mallId stays unknown)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from engine.store.pool import pg_text, pg_texts
from engine.store.queries import default_queries


@dataclass(frozen=True, slots=True)
class TokenCheck:
    shop_id: str
    token_sha256: str
    expires_at: datetime | None
    api_scopes: frozenset[str]
    mall_id: str | None
    payload: dict[str, Any]
    checked_at: datetime


@dataclass(frozen=True, slots=True)
class TokenCheckFailure:
    shop_id: str
    token_sha256: str
    error: str
    failed_at: datetime


class TokenChecks:
    def __init__(self, pool: asyncpg.Pool, *, queries: Mapping[str, str] | None = None) -> None:
        self._pool = pool
        self._q = default_queries() if queries is None else queries

    async def get(self, shop_id: str) -> TokenCheck | None:
        row = await self._pool.fetchrow(self._q["get_token_check"], shop_id)
        return None if row is None else _check(row)

    async def all(self) -> list[TokenCheck]:
        return [_check(r) for r in await self._pool.fetch(self._q["list_token_checks"])]

    async def save(self, check: TokenCheck) -> None:
        await self._pool.execute(
            self._q["save_token_check"],
            check.shop_id,
            check.token_sha256,
            check.expires_at,
            pg_texts(sorted(check.api_scopes)),
            pg_text(check.mall_id),
            check.payload,
            check.checked_at,
        )

    async def save_failure(self, failure: TokenCheckFailure) -> None:
        await self._pool.execute(
            self._q["save_token_check_failure"],
            failure.shop_id,
            failure.token_sha256,
            pg_text(failure.error[:2000]),  # Temu's words: a U+0000 must not lose the row
            failure.failed_at,
        )

    async def failures(self) -> list[TokenCheckFailure]:
        rows = await self._pool.fetch(self._q["list_token_check_failures"])
        return [
            TokenCheckFailure(
                shop_id=r["shop_id"],
                token_sha256=r["token_sha256"],
                error=r["error"],
                failed_at=r["failed_at"],
            )
            for r in rows
        ]


def _check(row: asyncpg.Record) -> TokenCheck:
    return TokenCheck(
        shop_id=row["shop_id"],
        token_sha256=row["token_sha256"],
        expires_at=row["expires_at"],
        api_scopes=frozenset(row["api_scopes"]),
        mall_id=row["mall_id"],
        payload=row["payload"],
        checked_at=row["checked_at"],
    )
