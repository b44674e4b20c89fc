"""What this process holds: the app leases its pacers' send gates check, and the timing of
leases (renewal, margin) every holder shares."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from engine.temu.errors import AppNotOwned

__all__ = ["MIN_MARGIN_S", "ClusterTiming", "Holdings"]

# Temu counts requests per sliding second: the gap between two owners must exceed it.
MIN_MARGIN_S = 1.5


@dataclass(frozen=True)
class ClusterTiming:
    lease_s: float = 30.0

    @property
    def renew_every_s(self) -> float:
        return self.lease_s / 3

    @property
    def margin_s(self) -> float:
        return max(MIN_MARGIN_S, self.lease_s / 4)

    @property
    def call_timeout_s(self) -> float:
        # A renewal that hangs longer is treated as failed; there is time for another try
        # before the margin is reached.
        return max(0.5, self.renew_every_s / 2)

    @property
    def retry_s(self) -> float:
        return min(1.0, self.renew_every_s)


@dataclass
class _Held:
    deadline: float  # monotonic: stop sending before deadline - margin
    since: datetime
    # Taken from a process found dead: it may have sent its last request just before dying,
    # so we wait out the rate limit's window before our first (monotonic).
    not_before: float = 0.0


@dataclass
class Holdings:
    """The app leases this process holds, as its pacers' send gates see them. Built before
    the runtime (whose pacers take ``gate``) and handed to the ``LeaseKeeper`` that fills it."""

    owner: str
    timing: ClusterTiming = field(default_factory=ClusterTiming)
    clock: Callable[[], float] = time.monotonic
    held: dict[str, _Held] = field(default_factory=dict)

    def owns(self, app_key: str) -> bool:
        held = self.held.get(app_key)
        if held is None:
            return False
        return held.not_before <= self.clock() < held.deadline - self.timing.margin_s

    def gate(self, app_key: str) -> Callable[[], None]:
        """For ``AppPacer(gate=...)``: refuses a send for an app this process does not own."""

        def check() -> None:
            if not self.owns(app_key):
                raise AppNotOwned(
                    "(lease)", 0, f"app {app_key} is not leased to this process ({self.owner})"
                )

        return check
