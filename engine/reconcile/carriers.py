"""Temu carrier ids for return labels: the carrier list per region, cached, and name mapping.

``temu.aftersales.carrier.get`` is keyed by ``returnWarehouseRegionId1``. The return's region is
taken from its order (``parentOrderMap.regionId``); when the order is not stored, from the
parent order number, which Temu prefixes with the region (``PO-211-...``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.reconcile.labels import map_carrier

CarrierList = list[tuple[str, str]]  # (carrierId, carrierName)
Fetch = Callable[[int], Awaitable[list[dict[str, Any]]]]

_ORDER_REGION = re.compile(r"^PO-(\d{1,4})-")
DEFAULT_TTL_S = 6 * 3600.0


def region_of(region_id: int | None, parent_order_sn: str | None) -> int | None:
    if region_id:
        return region_id
    m = _ORDER_REGION.match(parent_order_sn or "")
    return int(m.group(1)) if m else None


class UnknownCarrier(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CarrierDirectory:
    """Carrier lists per region, fetched at most once per ``ttl_s`` (carriers rarely change)."""

    def __init__(
        self, *, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._cache: dict[int, tuple[float, CarrierList]] = {}

    async def carriers(self, region_id: int, fetch: Fetch) -> CarrierList:
        hit = self._cache.get(region_id)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        items = await fetch(region_id)
        table = [
            (str(i["carrierId"]), str(i.get("carrierName") or ""))
            for i in items
            if i.get("carrierId") is not None
        ]
        self._cache[region_id] = (self._clock(), table)
        return table

    async def resolve(
        self,
        *,
        carrier_id: str | None,
        carrier_name: str | None,
        region_id: int | None,
        fetch: Fetch,
    ) -> str:
        """The Temu carrier id for a label; raises UnknownCarrier with a reason for the seller."""
        if region_id is None:
            if carrier_id:
                return carrier_id  # nothing to check against; Temu will judge it
            raise UnknownCarrier(
                f"cannot map carrier {carrier_name!r}: the return's region is unknown"
            )
        table = await self.carriers(region_id, fetch)
        if carrier_id:
            if any(cid == carrier_id for cid, _ in table):
                return carrier_id
            raise UnknownCarrier(
                f"unknown carrier id {carrier_id!r} for region {region_id} ({_known(table)})"
            )
        if not carrier_name:
            raise UnknownCarrier("the label names no carrier")
        mapped = map_carrier(carrier_name, table)
        if mapped is None:
            raise UnknownCarrier(
                f"unknown carrier {carrier_name!r}: no single Temu carrier matches "
                f"({_known(table)})"
            )
        return mapped


def _known(table: CarrierList) -> str:
    names = [f"{name or '?'}={cid}" for cid, name in table[:12]]
    more = ", ..." if len(table) > 12 else ""
    return "Temu carriers: " + ", ".join(names) + more if names else "Temu lists no carriers"
