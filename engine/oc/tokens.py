"""Where Orange Connex OAuth tokens live between calls and between restarts.

OC may rotate the refresh token on every refresh. The configured one only seeds the very first
refresh; after that the rotated one must survive a restart, so the client writes both tokens
to a ``TokenStore`` (Postgres in production) before it uses the new access token.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class StoredTokens:
    """The last tokens OC issued for a client id. ``expires_at`` is Unix time (seconds)."""

    # repr=False: these objects end up in debug logs and tracebacks.
    refresh_token: str = field(repr=False)
    access_token: str = field(repr=False)
    expires_at: float


class TokenStore(Protocol):
    async def get(self, client_id: str) -> StoredTokens | None: ...

    async def save(
        self, client_id: str, refresh_token: str, access_token: str, expires_at: float
    ) -> None: ...

    def exclusive(self, client_id: str) -> AbstractAsyncContextManager[None]:
        """Held around read-then-refresh, so that of several processes sharing the store only
        one refreshes: a second refresh with the same rotating token would be refused."""
        ...


class MemoryTokenStore:
    """A process-local TokenStore for tests and the demo; ``saves`` counts writes."""

    def __init__(self, initial: dict[str, StoredTokens] | None = None) -> None:
        self._tokens: dict[str, StoredTokens] = dict(initial or {})
        self.saves = 0

    async def get(self, client_id: str) -> StoredTokens | None:
        return self._tokens.get(client_id)

    @contextlib.asynccontextmanager
    async def exclusive(self, client_id: str) -> AsyncIterator[None]:
        yield  # one process: the client's own lock suffices

    async def save(
        self, client_id: str, refresh_token: str, access_token: str, expires_at: float
    ) -> None:
        self.saves += 1
        self._tokens[client_id] = StoredTokens(refresh_token, access_token, expires_at)
