"""Orange Connex OAuth: the access token, refresh with persisted rotation, and scrubbing.

One refresh at a time per process (a lock) and per client id across processes (the token
store's ``exclusive``): two racing refreshes would burn a rotated refresh token. Every token
this process has seen is remembered so that no message it builds can quote one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp

from engine.config import OrangeConnexSettings
from engine.logs import redact
from engine.oc.errors import OCAuthError, OCError
from engine.oc.tokens import StoredTokens, TokenStore
from engine.oc.wire import (
    DEFAULT_TOKEN_LIFETIME_S,
    GRANT_REFRESH_TOKEN,
    PATH_OAUTH_TOKEN,
    Q_CLIENT_ID,
    Q_GRANT_TYPE,
    Q_REFRESH_TOKEN,
    TOK_ACCESS,
    TOK_EXPIRES_IN,
    TOK_REFRESH,
    TOK_WRAPPERS,
    as_text,
    first,
    loads,
    oauth_detail,
)

log = logging.getLogger("engine.oc")

_MAX_TEXT = 300  # server-provided text quoted in errors is cut here
_REMEMBERED_TOKENS = 16
# After a failed refresh, how long other callers get its error instead of a refresh of their own.
FAIL_FAST_S = 30.0

# (operation, failures so far, reason, HTTP status) -> sleeps, or raises once out of attempts.
Backoff = Callable[[str, int, str, int | None], Awaitable[None]]


class OCAuth:
    """The access token of one OC client id. ``backoff`` is the client's retry policy."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: OrangeConnexSettings,
        tokens: TokenStore,
        *,
        clock: Callable[[], float],
        backoff: Backoff,
        refresh_margin_s: float,
        timeout: aiohttp.ClientTimeout,
        on_token_refresh: Callable[[], None] | None = None,
    ) -> None:
        self._session = session
        self._settings = settings
        self._tokens = tokens
        self._clock = clock
        self._backoff = backoff
        self._margin = refresh_margin_s
        self._timeout = timeout
        self._on_token_refresh = on_token_refresh
        self._oauth_url = settings.oauth_base_url.rstrip("/") + PATH_OAUTH_TOKEN
        # One refresh at a time: two racing refreshes would burn a rotated refresh token.
        self._lock = asyncio.Lock()
        self._failed: tuple[float, BaseException] | None = None  # the last refresh's failure

        self._refresh_token = settings.refresh_token.get()
        self._access_token = ""
        self._expires_at = 0.0
        self._lifetime: float | None = None
        self._unsaved = False
        self._seen_tokens: list[str] = []
        self.token_refreshes = 0

    def _fresh(self) -> bool:
        if not self._access_token or self._unsaved:
            return False
        margin = self._margin
        if self._lifetime is not None:
            # Short-lived tokens (simulator, tests) would otherwise always look expired.
            margin = min(margin, self._lifetime / 2)
        return self._clock() < self._expires_at - margin

    async def access(self) -> str:
        if self._fresh():
            return self._access_token
        async with self._lock:
            if not self._fresh():
                self._fail_fast()
                try:
                    await self._renew(rejected=None)
                except Exception as exc:
                    self._failed = (self._clock(), exc)
                    raise
                self._failed = None
            return self._access_token

    def note_no_answer(self) -> None:
        """The client's budget ran out while this token's refresh went unanswered (a silent
        host): the next callers are told at once. Not any cancellation (a pass cut off by
        shutdown or its deadline says nothing about OC)."""
        self._failed = (self._clock(), TimeoutError("no answer"))

    def _fail_fast(self) -> None:
        """A refresh that just failed is not tried again by every waiting task in turn (each
        would wait out a silent host again): for FAIL_FAST_S they get its error at once."""
        if self._failed is None or self._unsaved:
            return  # a refreshed token waiting for its save: saving is ours to retry at once
        at, exc = self._failed
        if self._clock() - at >= FAIL_FAST_S:
            return
        if isinstance(exc, OCAuthError):
            raise OCAuthError(str(exc), operation="token refresh", status=exc.status)
        reason = str(exc)
        raise OCError(
            self.msg("token refresh", f"failed {self._clock() - at:.0f} s ago ({reason})"),
            operation="token refresh",
            retryable=True,
        )

    async def replace_rejected(self, token: str) -> None:
        async with self._lock:
            if self._access_token != token and self._fresh():
                return  # a concurrent caller already replaced it
            await self._renew(rejected=token)

    async def _renew(self, *, rejected: str | None) -> None:
        """Under the lock: adopt a usable stored token, else refresh. Never two at once."""
        if self._unsaved:
            # A rotated refresh token that is not in the store yet must get there before any
            # store read could hand us the older one back.
            await self._persist()
            if rejected is None and self._fresh():
                return
        async with self._tokens.exclusive(self._settings.client_id):
            stored = await self._load()
            if stored is not None:
                self._remember(stored.refresh_token, stored.access_token)
                if stored.refresh_token:
                    self._refresh_token = stored.refresh_token
                usable = stored.access_token and stored.access_token != rejected
                if usable and self._clock() < stored.expires_at - self._margin:
                    # After a restart, or when another process refreshed: no refresh needed.
                    self._access_token = stored.access_token
                    self._expires_at = stored.expires_at
                    self._lifetime = None
                    return
            await self._refresh()

    async def _refresh(self) -> None:
        candidates = [t for t in (self._refresh_token, self._settings.refresh_token.get()) if t]
        candidates = list(dict.fromkeys(candidates))
        if not candidates:
            raise OCAuthError(
                self.msg("token refresh", "no refresh token (set orange_connex.refresh_token)"),
                operation="token refresh",
            )
        for i, refresh_token in enumerate(candidates):
            try:
                await self._refresh_with(refresh_token)
                return
            except OCAuthError:
                if i + 1 == len(candidates):
                    raise
                # The operator may have re-authorised and put a new token in the config.
                log.warning(
                    "OC rejected the stored refresh token; trying the configured one instead"
                )

    async def _refresh_with(self, refresh_token: str) -> None:
        operation = "token refresh"
        params = {
            Q_CLIENT_ID: self._settings.client_id,
            Q_GRANT_TYPE: GRANT_REFRESH_TOKEN,
            Q_REFRESH_TOKEN: refresh_token,
        }
        failures = 0
        while True:
            try:
                async with self._session.post(
                    self._oauth_url, params=params, timeout=self._timeout
                ) as resp:
                    status = resp.status
                    payload = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures += 1
                await self._backoff(operation, failures, type(exc).__name__, None)
                continue
            if status >= 500 or status == 429:
                failures += 1
                await self._backoff(operation, failures, f"HTTP {status}", status)
                continue
            body = loads(payload)
            if status >= 400:
                raise OCAuthError(
                    self.msg(operation, f"rejected (HTTP {status}){oauth_detail(body)}"),
                    operation=operation,
                    status=status,
                )
            if not isinstance(body, dict):
                failures += 1
                await self._backoff(operation, failures, "response is not a JSON object", None)
                continue
            if not isinstance(body.get(TOK_ACCESS[0]), str):
                for wrapper in TOK_WRAPPERS:
                    if isinstance(body.get(wrapper), dict):
                        body = body[wrapper]
                        break
            access = as_text(first(body, TOK_ACCESS))
            if not access:
                raise OCAuthError(
                    self.msg(operation, f"no access token in the answer{oauth_detail(body)}"),
                    operation=operation,
                    status=status,
                )
            new_refresh = as_text(first(body, TOK_REFRESH)) or refresh_token
            try:
                lifetime = float(first(body, TOK_EXPIRES_IN) or DEFAULT_TOKEN_LIFETIME_S)
            except (TypeError, ValueError):
                lifetime = float(DEFAULT_TOKEN_LIFETIME_S)
            self._remember(access, new_refresh)
            self._access_token = access
            self._refresh_token = new_refresh
            self._lifetime = lifetime
            self._expires_at = self._clock() + lifetime
            self._unsaved = True
            self.token_refreshes += 1
            if self._on_token_refresh is not None:
                self._on_token_refresh()
            await self._persist()
            log.info(
                "OC access token refreshed (valid %ds%s)",
                int(lifetime),
                "; refresh token rotated" if new_refresh != refresh_token else "",
            )
            return

    async def _load(self) -> StoredTokens | None:
        try:
            return await self._tokens.get(self._settings.client_id)
        except Exception as exc:
            raise OCError(
                self.msg("token store", f"cannot read tokens ({type(exc).__name__})"),
                operation="token store",
                retryable=True,
            ) from None

    async def _persist(self) -> None:
        try:
            await self._tokens.save(
                self._settings.client_id, self._refresh_token, self._access_token, self._expires_at
            )
        except Exception as exc:
            # Kept unsaved: the next call saves again before it uses the token.
            raise OCError(
                self.msg("token store", f"cannot save refreshed tokens ({type(exc).__name__})"),
                operation="token store",
                retryable=True,
            ) from None
        self._unsaved = False

    def _remember(self, *tokens: str) -> None:
        for t in tokens:
            if t and t not in self._seen_tokens:
                self._seen_tokens.append(t)
        del self._seen_tokens[:-_REMEMBERED_TOKENS]

    def scrub(self, text: str) -> str:
        secrets = [
            *self._seen_tokens,
            self._access_token,
            self._refresh_token,
            self._settings.refresh_token.get(),
            self._settings.client_key.get(),
        ]
        return redact(text, secrets)

    def msg(self, operation: str, text: str) -> str:
        text = self.scrub(text)
        if len(text) > _MAX_TEXT:
            text = text[:_MAX_TEXT] + "..."
        return f"OC {operation}: {text}"
