"""Temu carrier ids for return labels: the carrier list per region, cached, and name mapping.

``temu.aftersales.carrier.get`` is keyed by ``returnWarehouseRegionId1``. The return's region is
taken from its order (``parentOrderMap.regionId``); when the order is not stored, from the
parent order number, which Temu prefixes with the region (``PO-211-...``). When neither says,
the list is ``bg.logistics.companies.get``'s (region None): a label is mapped against it
rather than waiting for a region that will never be known.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.reconcile.labels import map_carrier

CarrierList = list[tuple[str, str]]  # (carrierId, carrierName)
Fetch = Callable[[int | None], Awaitable[list[dict[str, Any]]]]

_ORDER_REGION = re.compile(r"^PO-(\d{1,4})-")
DEFAULT_TTL_S = 6 * 3600.0
# A miss in a list younger than this is not fetched again (a carrier Temu added a minute ago
# waits a minute; a batch of lines naming an unknown carrier does not call Temu per line).
MISS_REFRESH_S = 60.0


def region_of(region_id: int | None, parent_order_sn: str | None) -> int | None:
    if region_id:
        return region_id
    m = _ORDER_REGION.match(parent_order_sn or "")
    return int(m.group(1)) if m else None


class UnknownCarrier(ValueError):
    """``listless``: Temu listed no carrier at all for the region (a passing hiccup)."""

    def __init__(self, reason: str, *, listless: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.listless = listless


class CarrierDirectory:
    """Carrier lists per region, fetched at most once per ``ttl_s`` (carriers rarely change).

    An empty list is never cached (one empty answer would otherwise block every upload of the
    region for hours), and a name or id missing from a cached list triggers one fresh fetch
    before it is called unknown (a carrier Temu added since), at most once per ``refresh_s``
    per region: an import of many lines with the same wrong carrier costs one call, not one
    per line."""

    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        refresh_s: float = MISS_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._refresh = refresh_s
        self._clock = clock
        self._cache: dict[int | None, tuple[float, CarrierList]] = {}
        # Each id as Temu's list gave it (a number or a string): sent back the same way.
        self._as_listed: dict[str, Any] = {}

    async def carriers(
        self, region_id: int | None, fetch: Fetch, *, fresh: bool = False
    ) -> CarrierList:
        hit = self._cache.get(region_id)
        if not fresh and hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        items = await fetch(region_id)
        for i in items:
            if isinstance(i, dict) and isinstance(i.get("carrierId"), int | str):
                self._as_listed[str(i["carrierId"])] = i["carrierId"]
        table = [
            (str(i["carrierId"]), str(i.get("carrierName") or ""))
            for i in items
            if isinstance(i, dict) and i.get("carrierId") is not None
        ]
        if table:
            self._cache[region_id] = (self._clock(), table)
        else:
            self._cache.pop(region_id, None)
        return table

    async def resolve(
        self,
        *,
        carrier_id: str | None,
        carrier_name: str | None,
        region_id: int | None,
        fetch: Fetch,
    ) -> str:
        """The Temu carrier id for a label; raises UnknownCarrier with a reason for the seller.
        ``region_id`` None: the return's region is unknown, the region-less list is used."""
        if region_id is None and carrier_id:
            return carrier_id  # nothing region-specific to check against; Temu will judge it
        cached = self._cache.get(region_id)
        table = await self.carriers(region_id, fetch)
        found = _lookup(table, carrier_id, carrier_name)
        if found is None and cached is not None and self._clock() - cached[0] >= self._refresh:
            # A miss in a cached list: one fresh look before calling it unknown.
            table = await self.carriers(region_id, fetch, fresh=True)
        return _checked(table, carrier_id, carrier_name, region_id)

    def as_listed(self, carrier_id: str) -> Any:
        """``carrier_id`` in the JSON type Temu's carrier list gave it (temu-api.md does not
        say which; its own example sends a string); an id no list held (a label's companyId
        taken on trust): a number when it is all digits."""
        if carrier_id in self._as_listed:
            return self._as_listed[carrier_id]
        return int(carrier_id) if carrier_id.isdigit() else carrier_id


def _lookup(table: CarrierList, carrier_id: str | None, carrier_name: str | None) -> str | None:
    if carrier_id:
        return carrier_id if any(cid == carrier_id for cid, _ in table) else None
    return map_carrier(carrier_name, table) if carrier_name else None


def _checked(
    table: CarrierList, carrier_id: str | None, carrier_name: str | None, region_id: int | None
) -> str:
    if carrier_id:
        if any(cid == carrier_id for cid, _ in table):
            return carrier_id
        where = "no known region" if region_id is None else f"region {region_id}"
        raise UnknownCarrier(
            f"unknown carrier id {carrier_id!r} for {where} ({_known(table)})",
            listless=not table,
        )
    if not carrier_name:
        raise UnknownCarrier("the label names no carrier")
    mapped = map_carrier(carrier_name, table)
    if mapped is None:
        raise UnknownCarrier(
            f"unknown carrier {carrier_name!r}: no single Temu carrier matches ({_known(table)})",
            listless=not table,
        )
    return mapped


def _known(table: CarrierList) -> str:
    names = [f"{name or '?'}={cid}" for cid, name in table[:12]]
    more = ", ..." if len(table) > 12 else ""
    return "Temu carriers: " + ", ".join(names) + more if names else "Temu lists no carriers"
