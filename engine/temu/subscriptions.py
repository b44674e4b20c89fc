"""``temu-sync webhooks subscribe``: one ``bg.tmc.message.update`` per shop, at most one call
per second per app (Temu answers 110020007 beyond that), each shop's answer reported."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.temu.api import TemuShopApi
from engine.temu.errors import EventSubscriptionTooFast, TemuError

MIN_INTERVAL_S = 1.05  # a little over one second: Temu's clock and ours are not the same


@dataclass(frozen=True)
class SubscribeResult:
    shop_id: str
    ok: bool
    message: str  # what Temu answered, in words (the event codes now subscribed, when ok)


async def subscribe_shops(
    apis: Sequence[TemuShopApi],
    events: Sequence[str],
    *,
    min_interval_s: float = MIN_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
) -> list[SubscribeResult]:
    """Subscribes each shop to ``events``; calls of one app are spaced by ``min_interval_s``
    (apps run in parallel). One refusal does not stop the other shops."""
    by_app: dict[str, list[TemuShopApi]] = {}
    for api in apis:
        by_app.setdefault(api.app_key, []).append(api)

    async def one_app(shops: list[TemuShopApi]) -> list[SubscribeResult]:
        out: list[SubscribeResult] = []
        last: float | None = None
        for api in shops:
            for attempt in (1, 2):
                if last is not None:
                    await asyncio.sleep(max(0.0, last + min_interval_s - clock()))
                last = clock()
                try:
                    answer = await api.update_event_subscription(permit=list(events))
                except EventSubscriptionTooFast as exc:
                    if attempt == 1:
                        continue  # another process called just now: once more, a second later
                    out.append(SubscribeResult(api.shop_id, False, str(exc)))
                except TemuError as exc:
                    out.append(SubscribeResult(api.shop_id, False, str(exc)))
                else:
                    codes = answer.get("eventCodeList") if isinstance(answer, dict) else None
                    shown = ", ".join(codes) if isinstance(codes, list) else ", ".join(events)
                    out.append(SubscribeResult(api.shop_id, True, shown))
                break
        return out

    groups = await asyncio.gather(*(one_app(shops) for shops in by_app.values()))
    order = {api.shop_id: i for i, api in enumerate(apis)}
    return sorted((r for g in groups for r in g), key=lambda r: order[r.shop_id])
