"""Access-token checks (interface.md, "Access tokens"): each shop's token is asked about
(``bg.open.accesstoken.info.get``) at most once a day per token; the answer is kept in
Postgres, and a shop whose token lacks an API type the engine needs fails before any other
call, with a message naming the missing types.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.errors import describe
from engine.store.token_checks import TokenCheck, TokenCheckFailure, TokenChecks
from engine.temu.api import TemuShopApi
from engine.temu.errors import TemuError
from engine.temu.limiter import Lane
from engine.temu.token_info import missing_scopes

log = logging.getLogger(__name__)

CHECK_EVERY = timedelta(days=1)
# temu-api.md: an API type outside the token's apiScopeList answers 3000032.
SCOPE_NOT_GRANTED = 3000032
WARN_BEFORE = timedelta(days=14)


class MissingScopes(Exception):
    """The shop's token was not granted every API type the engine calls for it."""

    def __init__(self, shop_id: str, missing: list[str]) -> None:
        self.shop_id = shop_id
        self.missing = missing
        super().__init__(
            f"shop {shop_id}: the access token is not authorized for {', '.join(missing)}; "
            "have the seller authorize these API types for the app, then update the token"
        )


@dataclass(frozen=True)
class TokenStatus:
    shop_id: str
    expires_at: datetime | None
    missing: list[str]
    checked_at: datetime
    asked_temu: bool  # False when a stored answer for this token, under a day old, served


class TokenChecker:
    def __init__(
        self,
        checks: TokenChecks,
        needed: Iterable[str],
        *,
        every: timedelta = CHECK_EVERY,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._checks = checks
        self._needed = frozenset(needed)
        self._every = every
        self._clock = clock

    async def check(self, api: TemuShopApi, *, lane: Lane = Lane.INCREMENTAL) -> TokenStatus:
        """The token's expiry and missing scopes; calls Temu only when no answer about this
        very token is younger than a day. Temu's errors (an expired token: ShopAuthError)
        propagate to the caller, which treats them like any other failure of the shop."""
        now = self._clock()
        last = await self._checks.get(api.shop_id)
        fresh = (
            last is not None
            and last.token_sha256 == api.token_fingerprint
            and timedelta(0) <= now - last.checked_at < self._every
        )
        if last is None or not fresh:
            try:
                info = await api.access_token_info(lane=lane)
            except TemuError as exc:
                if refused(exc):
                    await self._save_failure(api, exc, now)
                raise
            last = TokenCheck(
                shop_id=api.shop_id,
                token_sha256=api.token_fingerprint,
                expires_at=info.expires_at,
                api_scopes=info.api_scopes,
                mall_id=info.mall_id,
                payload=info.raw,
                checked_at=now,
            )
            await self._checks.save(last)
        status = TokenStatus(
            shop_id=api.shop_id,
            expires_at=last.expires_at,
            missing=missing_scopes(last.api_scopes, self._needed),
            checked_at=last.checked_at,
            asked_temu=not fresh,
        )
        if status.expires_at is not None and status.expires_at - now < WARN_BEFORE:
            log.warning(
                "the access token expires at %s",
                iso_utc(status.expires_at),
                extra={"shop": api.shop_id},
            )
        return status

    async def _save_failure(self, api: TemuShopApi, exc: TemuError, now: datetime) -> None:
        failure = TokenCheckFailure(api.shop_id, api.token_fingerprint, str(exc), now)
        try:
            await self._checks.save_failure(failure)
        except Exception as db_exc:  # the shop fails for its token either way; say both
            log.warning(
                "could not record the refused token check: %s",
                describe(db_exc),
                extra={"shop": api.shop_id},
            )

    async def require(self, api: TemuShopApi, *, lane: Lane = Lane.INCREMENTAL) -> TokenStatus:
        """:meth:`check`, raising MissingScopes when a needed API type was not granted."""
        status = await self.check(api, lane=lane)
        if status.missing:
            raise MissingScopes(api.shop_id, status.missing)
        return status


def refused(exc: TemuError) -> bool:
    """Temu answered the check with a verdict (a bad token or app, or a token that may not ask
    about itself), as opposed to a call that could not be made (a hiccup: try again later)."""
    return exc.scope != "call" or exc.code == SCOPE_NOT_GRANTED


def iso_utc(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def status_fields(check: TokenCheck | None, needed: Iterable[str]) -> dict[str, Any]:
    """The ``status --json`` fields of one shop: null when never checked."""
    if check is None:
        return {"token_expires_at": None, "token_missing_scopes": None}
    return {
        "token_expires_at": None if check.expires_at is None else iso_utc(check.expires_at),
        "token_missing_scopes": missing_scopes(check.api_scopes, needed),
    }


def expires_soon(check: TokenCheck | None, now: datetime) -> bool:
    """For ``status``'s warning: a known expiry within 14 days (or already past)."""
    if check is None or check.expires_at is None:
        return False
    return check.expires_at - now < WARN_BEFORE


# How long an app Temu refused (3000001, 3000020-28) stays stopped in one gate before one of
# its shops asks again: a daemon notices an app unsuspended without a restart.
APP_REFUSAL_HOLD_S = 300.0


class TokenGate:
    """What the sync asks before a shop's first call of a pass: is its token good for what we
    are about to call? One SELECT while the stored answer is fresh, a Temu call (the lowest
    lane) once a day per token. ``MissingScopes`` / ``TemuError`` fail that shop only."""

    def __init__(
        self,
        checker: TokenChecker,
        apis: Mapping[str, TemuShopApi],
        observe: Callable[[TokenStatus], None] | None = None,
        *,
        app_hold_s: float = APP_REFUSAL_HOLD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checker = checker
        self._apis = apis
        self._observe = observe
        self._app_hold_s = app_hold_s
        self._clock = clock
        # app_key -> (Temu's refusal of the app itself, when): its other shops are not asked.
        self._app_refused: dict[str, tuple[TemuError, float]] = {}

    async def require(self, shop_id: str) -> None:
        api = self._apis.get(shop_id)
        if api is None:
            return
        app_key = api.app_key
        held = self._app_refused.get(app_key)
        if held is not None and self._clock() - held[1] < self._app_hold_s:
            # temu-api.md: an app-level refusal (bad signature, unknown or suspended app_key)
            # stops the app: every shop of it would be refused the same way.
            again = copy.copy(held[0])
            again.shop_id = shop_id
            raise again
        try:
            status = await self._checker.check(api, lane=Lane.BACKFILL)
        except TemuError as exc:
            if exc.scope == "call" or exc.code == SCOPE_NOT_GRANTED:
                # The check itself could not be made (Temu hiccup, or the token may not ask
                # about itself): that says nothing against the token, so the sync goes on and
                # the check is tried again at the next pass.
                log.warning("access token check skipped: %s", exc, extra={"shop": shop_id})
                return
            if exc.scope == "app":
                self._app_refused[app_key] = (exc, self._clock())
            raise  # the token or the app is refused: the shop's calls would fail the same way
        self._app_refused.pop(app_key, None)
        if self._observe is not None:
            self._observe(status)
        if status.missing:
            raise MissingScopes(shop_id, status.missing)


class ShopRefused(Exception):
    """The shop's token failed its check: the command sends nothing more to Temu for it."""

    def __init__(self, shop_id: str, reason: str) -> None:
        self.shop_id = shop_id
        self.reason = reason
        super().__init__(reason)


class TokenScreen:
    """One command's verdict per shop, for the commands that call Temu outside the sync
    (``reconcile --once``, ``labels import``, ``webhooks subscribe``): each shop goes through
    the gate once, before the command's first Temu call for it, and a refused shop stays
    refused for the rest of the command (``refused``: shop -> message)."""

    def __init__(self, gate: TokenGate, *, log_refusals: bool = True) -> None:
        self._gate = gate
        self._log = log_refusals
        self._passed: set[str] = set()
        self.refused: dict[str, str] = {}

    async def require(self, shop_id: str) -> None:
        """Raises ShopRefused when the shop's token lacks a needed API type or is refused."""
        if shop_id in self._passed:
            return
        if shop_id not in self.refused:
            try:
                await self._gate.require(shop_id)
            except (MissingScopes, TemuError) as exc:
                self.refused[shop_id] = str(exc)
                if self._log:
                    log.error("access token check failed: %s", exc, extra={"shop": shop_id})
            else:
                self._passed.add(shop_id)
                return
        raise ShopRefused(shop_id, self.refused[shop_id])

    async def usable(self, shop_ids: Iterable[str]) -> list[str]:
        """The shops (in order) whose token passes; the others land in ``refused``."""
        out = []
        for shop_id in shop_ids:
            try:
                await self.require(shop_id)
            except ShopRefused:
                continue
            out.append(shop_id)
        return out
