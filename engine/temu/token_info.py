"""``bg.open.accesstoken.info.get``: what a shop's access token allows and until when, and
which of the API types this engine calls the seller did not grant.

temu-api.md: ``result.expiredTime`` (Unix seconds), ``apiScopeList`` (granted API types),
``mallId``. Parsing assumes the less convenient answers too: a time in milliseconds or as a
numeric string, a mallId as a number or a string, non-string junk inside the scope list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.temu.errors import MalformedResponse

ACCESS_TOKEN_INFO = "bg.open.accesstoken.info.get"

# API types by the part of the engine that calls them (engine/temu/api.py constants; kept as
# strings here so this module stays a leaf that api.py can import).
ORDERS_SCOPES = ("bg.order.list.v2.get",)
RETURNS_SCOPES = (
    "bg.aftersales.parentaftersales.list.get",
    "bg.aftersales.aftersales.list.get",
    "bg.aftersales.parentreturnorder.get",
)
RECONCILER_SCOPES = (
    "bg.aftersales.parentaftersales.list.get",
    "bg.aftersales.parentreturnorder.get",
    "temu.aftersales.returnlabel.prepare.get",
    "temu.aftersales.upload.returnlabel",
    "temu.aftersales.carrier.get",
)
WEBHOOK_SCOPES = ("bg.tmc.message.update",)
# `labels import` checks a label's carrier against Temu's list before queueing it.
LABEL_IMPORT_SCOPES = ("temu.aftersales.carrier.get",)

# Above this an expiredTime can only be milliseconds (it is year 5138 as seconds).
_MS_THRESHOLD = 100_000_000_000


@dataclass(frozen=True)
class TokenInfo:
    expires_at: datetime | None  # None: Temu did not say (treated as "no known expiry")
    api_scopes: frozenset[str]
    mall_id: str | None
    raw: dict[str, Any]  # the result as sent, kept in Postgres


def needed_scopes(
    *, orders: bool, returns: bool, reconciler: bool, webhooks: bool = False
) -> frozenset[str]:
    """The API types a configuration makes the engine call ([sync], [reconciler], [webhooks])."""
    out: set[str] = set()
    for enabled, scopes in (
        (orders, ORDERS_SCOPES),
        (returns, RETURNS_SCOPES),
        (reconciler, RECONCILER_SCOPES),
        (webhooks, WEBHOOK_SCOPES),
    ):
        if enabled:
            out.update(scopes)
    return frozenset(out)


def missing_scopes(granted: Iterable[str], needed: Iterable[str]) -> list[str]:
    """The needed API types the token was not granted, sorted (``[]`` when none)."""
    return sorted(set(needed) - set(granted))


def parse_token_info(result: dict[str, Any]) -> TokenInfo:
    """Raises MalformedResponse when the answer cannot say which scopes were granted."""
    scopes = result.get("apiScopeList")
    if not isinstance(scopes, list):
        raise MalformedResponse(
            ACCESS_TOKEN_INFO,
            0,
            f"malformed result: apiScopeList is {type(scopes).__name__}, not a list",
        )
    mall = result.get("mallId")
    mall_id = str(mall) if isinstance(mall, int | str) and not isinstance(mall, bool) else None
    return TokenInfo(
        expires_at=_unix_time(result.get("expiredTime")),
        api_scopes=frozenset(s.strip() for s in scopes if isinstance(s, str) and s.strip()),
        mall_id=mall_id or None,
        raw=result,
    )


def _unix_time(value: Any) -> datetime | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    seconds = value / 1000 if value > _MS_THRESHOLD else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None
