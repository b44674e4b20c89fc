"""Per-shop access-token grants: expiry and scopes (``bg.open.accesstoken.info.get``, issue 15).

temu-api.md: a token used past ``expiredTime`` answers 3000034, an API type outside
``apiScopeList`` answers 3000032. The info call itself is a scope like any other (the partner
docs' example lists it), so a grant without it cannot even ask what it holds: the less
convenient answer. Defaults: expiry ten years after the simulator is built, every API type the
simulator serves granted. Change a grant with ``POST /_sim/token`` (``Simulator.set_token``);
revocation (``/_sim/revoke``, ``/_sim/unrevoke``) is separate and wins over the grant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.sim.codes import TOKEN_EXPIRED, TOKEN_NO_SCOPE, ApiError

TOKEN_INFO = "bg.open.accesstoken.info.get"
DEFAULT_TTL_S = 10 * 365 * 24 * 3600
# Webhook subscriptions the info answers (what the docs' example shows; the engine reads none).
_EVENTS = ("bg_order_status_change_event", "bg_aftersales_status_change")


@dataclass
class TokenGrant:
    expires_at: int  # Unix seconds; the token works while now < expires_at
    scopes: frozenset[str]

    def check(self, api_type: str, now: int) -> None:
        if now >= self.expires_at:
            raise ApiError(TOKEN_EXPIRED, reason="token")
        if api_type not in self.scopes:
            raise ApiError(TOKEN_NO_SCOPE, reason="token")


def make_grant(
    expires_at: int | None, scopes: Iterable[str] | None, *, now: int, all_types: Iterable[str]
) -> TokenGrant:
    if expires_at is not None and (type(expires_at) is not int):
        raise ValueError("expires_at must be Unix seconds (an integer)")
    if scopes is not None and (
        isinstance(scopes, str) or not all(isinstance(s, str) for s in scopes)
    ):
        raise ValueError("scopes must be a list of API type names")
    return TokenGrant(
        expires_at=now + DEFAULT_TTL_S if expires_at is None else expires_at,
        scopes=frozenset(all_types if scopes is None else scopes),
    )


def info_result(token: str, grant: TokenGrant, mall_id: int) -> dict[str, Any]:
    """``result`` of bg.open.accesstoken.info.get, shaped like the partner docs' example."""
    return {
        "accessToken": token,
        "apiScopeList": sorted(grant.scopes),
        "appSubscribeEventCodeList": list(_EVENTS),
        "appSubscribeStatus": 0,
        "authEventCodeList": [],
        "expiredTime": grant.expires_at,
        "mallId": mall_id,
    }
