"""The Temu calls the reconciler makes for one shop.

The label upload is sent as a non-idempotent call (``TemuShopApi.upload_returnlabel``): the
transport resends it only after a refusal that proves nothing was applied (4000004), never after
a lost answer, which the executor resolves by re-reading the return.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.temu.api import TemuShopApi
from engine.temu.errors import TemuError
from engine.temu.limiter import Lane

log = logging.getLogger(__name__)

LANE = Lane.RECONCILER
NO_SCOPE = 3000032  # access_token has no scope for the API type (temu-api.md)
DAY_S = 86400
# Without a stored creation time the re-read spans this far back (Temu keeps returns open for
# weeks; two years is generous and still one call).
WIDE_WINDOW_S = 2 * 365 * DAY_S
# Re-reading one return: a filtered answer fits the first page; an unfiltered one is paged
# this far (4,000 returns around its creation day) before the task waits for a later try.
REREAD_PAGE_SIZE = 100
REREAD_MAX_PAGES = 40


_INT_TEXT = re.compile(r"\s*-?[0-9]{1,9}\s*")


def _int(value: Any) -> int | None:
    """An integer field read the way the store's ``j_int`` reads it, so the reconciler and the
    stored row agree: a JSON integer, an integral float, or a numeric string ("8")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    return None


@dataclass(frozen=True)
class TemuReturn:
    """A return as Temu shows it right now (an element of the parent returns list)."""

    item: dict[str, Any]

    @property
    def status(self) -> int | None:
        return _int(self.item.get("parentAfterSalesStatus"))

    @property
    def operations(self) -> list[int]:
        ops = self.item.get("availableOperateList")
        if not isinstance(ops, list):
            return []
        return [op for op in map(_int, ops) if op is not None]

    @property
    def delivery_type(self) -> int | None:
        """returnDeliveryType: 3 drop off, 4 pick up (the buyer's choice)."""
        return _int(self.item.get("returnDeliveryType"))

    @property
    def awaiting_label(self) -> bool:
        return self.status == 8 and 10 in self.operations


class ReturnNotReached(Exception):
    """A return's re-read paged as far as it may without reaching it (not: not listed)."""


class TemuReturns:
    def __init__(self, api: TemuShopApi, *, clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.shop_id = api.shop_id
        self._clock = clock

    async def current(self, sn: str, create_at: int | None) -> TemuReturn | None:
        """Re-reads one return (``parentAfterSalesSnList``); None when Temu does not list it.

        A window around the creation time is used because it never moves, unlike updateAt.
        The filter is not trusted to be applied (temu-api.md does not say how strictly it
        is): the window is paged until the return is found or every page was read, so a list
        that ignores it costs more pages, never a wrong "not listed". Raises
        ``ReturnNotReached`` (retried later) past ``REREAD_MAX_PAGES``."""
        if create_at:
            window = {"create_start": create_at - DAY_S, "create_end": create_at + DAY_S}
        else:
            now = int(self._clock())
            window = {"update_start": now - WIDE_WINDOW_S, "update_end": now + DAY_S}
        read = 0
        for page_no in range(1, REREAD_MAX_PAGES + 1):
            page = await self.api.list_parent_returns(
                page_no=page_no,
                page_size=REREAD_PAGE_SIZE,
                parent_after_sales_sns=[sn],
                lane=LANE,
                **window,
            )
            for item in page.items:
                if item.get("parentAfterSalesSn") == sn:
                    return TemuReturn(item)
            read += len(page.items) + len(page.odd)
            if len(page.items) + len(page.odd) < REREAD_PAGE_SIZE or read >= page.total:
                return None
        raise ReturnNotReached(
            f"Temu listed {read} other returns before {sn} (its parentAfterSalesSnList filter "
            "was not applied); trying again later"
        )

    async def prepare(self, sn: str, parent_order_sn: str) -> dict[str, Any]:
        return await self.api.returnlabel_prepare(sn, parent_order_sn, lane=LANE)

    async def logistics(self, sn: str) -> dict[str, Any]:
        return await self.api.parent_return_order(sn, lane=LANE)

    async def carriers(self, region_id: int | None) -> list[dict[str, Any]]:
        """The return region's carriers; for a return whose region is unknown, the list
        ``bg.logistics.companies.get`` gives for none in particular (temu-api.md offers both)."""
        if region_id is None:
            try:
                return await self.api.logistics_companies(lane=LANE)
            except TemuError as exc:
                if exc.code != NO_SCOPE:
                    raise
                # Only a fallback: a token without it is not a broken shop, the label waits.
                return []
        return await self.api.carriers(region_id, lane=LANE)

    async def upload(self, params: dict[str, Any], *, deadline: float | None = None) -> None:
        """Sent at most once unless the gateway refused it outright (see the module doc); no
        (re)send starts that could outlast ``deadline`` (the event loop's clock)."""
        await self.api.upload_returnlabel(params, lane=LANE, deadline=deadline)


def trackings(logistics: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Each distinct tracking number of the reverse logistics, in Temu's order, with the first
    carrier name given for it: OC hears of every one (a return may ship in several packages).
    Read the way the planner's SQL reads the stored payload (trimmed, empty ones skipped)."""
    found: dict[str, str | None] = {}
    for entry in logistics.get("logisticsInfoList") or []:
        if not isinstance(entry, dict):
            continue
        number = _text(entry.get("trackingNumber"))
        if not number:
            continue
        carrier = _text(entry.get("carrierName")) or None
        if found.get(number) is None:
            found[number] = carrier
    return list(found.items())


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""
