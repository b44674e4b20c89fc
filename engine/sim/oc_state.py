"""Orange Connex's side of the world: OAuth tokens, RMAs, their labels, applied pushes."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OPEN = "OPEN"
CANCELLED = "CANCELLED"


@dataclass(slots=True)
class Rma:
    order_number: str
    reference_number: str  # the Temu parentAfterSalesSn
    shop_id: str
    status: str
    tracking_number: str  # what OC believes the buyer ships with; "" until known
    carrier_name: str
    label_tracking: str  # the label OC issues once it is ready
    label_carrier: str
    service_type: str
    label_queries: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "orderNumber": self.order_number,
            "referenceNumber": self.reference_number,
            "status": self.status,
            "trackingNumber": self.tracking_number,
            "carrierName": self.carrier_name,
        }


class OcTokens:
    """OAuth refresh with optional rotation: a rotated-away refresh token stops working."""

    def __init__(
        self,
        client_id: str,
        refresh_token: str,
        ttl_s: float,
        *,
        rotate: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self.refresh_token = refresh_token
        self.ttl_s = ttl_s
        self.rotate = rotate
        self.clock = clock  # public: a test steps it to expire tokens without sleeping
        self._access: dict[str, float] = {}  # token -> expiry (clock)
        self.refreshes = 0

    def refresh(self, given: str) -> dict[str, Any] | None:
        if given != self.refresh_token:
            return None
        self.refreshes += 1
        if self.rotate:
            self.refresh_token = f"oc-refresh-{self.refreshes}-{secrets.token_hex(8)}"
        access = f"oc-access-{secrets.token_hex(16)}"
        self._access[access] = self.clock() + self.ttl_s
        return {
            "access_token": access,
            "refresh_token": self.refresh_token,
            "expires_in": int(self.ttl_s),
            "token_type": "bearer",
        }

    def valid(self, access: str | None) -> bool:
        if not access:
            return False
        expiry = self._access.get(access)
        return expiry is not None and self.clock() < expiry

    def expire_all(self) -> None:
        """Forces the next API call onto the 401 + refresh path (tests)."""
        self._access.clear()


class OcState:
    def __init__(self, tokens: OcTokens, label_ready_after: int) -> None:
        self.tokens = tokens
        self.label_ready_after = label_ready_after
        self.rmas: dict[str, Rma] = {}  # by orderNumber
        self.by_reference: dict[str, list[Rma]] = {}
        self.pushes: list[dict[str, Any]] = []
        self.answered: dict[str, bytes] = {}  # messageId of an applied POST -> its answer

    def add(self, rma: Rma) -> None:
        if rma.order_number in self.rmas:
            raise ValueError(f"duplicate RMA {rma.order_number}")
        self.rmas[rma.order_number] = rma
        self.by_reference.setdefault(rma.reference_number, []).append(rma)

    def truth(self) -> list[dict[str, Any]]:
        return [
            {
                **r.summary(),
                "shopId": r.shop_id,
                "labelTracking": r.label_tracking,
                "labelCarrier": r.label_carrier,
                "labelQueries": r.label_queries,
                "labelReady": r.label_queries > self.label_ready_after,
            }
            for r in self.rmas.values()
        ]
