"""What every reconciler task kind shares: outcomes, the lease handle, task kinds and keys.

A handler turns one claimed task into an ``Outcome``; the executor maps outcomes onto the
outbox (done, retry with backoff, wait without using an attempt, park as dead). Handlers never
touch the outbox directly except through ``Lease.save_progress``, which is how they make a
step durable before an irreversible call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.store.outbox import Task

UPLOAD_LABEL = "upload_label"
OC_TRACKING = "oc_tracking"
OC_CANCEL = "oc_cancel"
ALL_KINDS = (UPLOAD_LABEL, OC_TRACKING, OC_CANCEL)

# Dedupe keys: one upload per return, one cancel per return, one tracking push per return and
# distinct tracking number. ':' never occurs in Temu sns; shop ids are the seller's own names.
UPLOAD_KEY_PREFIX = UPLOAD_LABEL + ":"


def upload_key(shop_id: str, sn: str) -> str:
    return f"{UPLOAD_KEY_PREFIX}{shop_id}:{sn}"


def tracking_key(number: object) -> str:
    """A tracking number as compared and deduplicated: upper case, no whitespace (" 1z 999"
    and "1Z999" are one parcel). The planner's SQL (reconcile.sql) applies the same rule;
    the number itself is always sent as Temu shows it."""
    return "".join(str(number).split()).upper()


@dataclass(frozen=True)
class Done:
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Retry:
    """A failure that may pass: counts an attempt, backs off, dead after max_attempts.
    ``delay_s``: wait at least this long before the next try (e.g. minutes after an upload
    whose answer was lost, so Temu's lagging returns list can catch up)."""

    reason: str
    delay_s: float = 0.0


@dataclass(frozen=True)
class Wait:
    """Not the task's fault (OC label not issued yet, no RMA yet, a configuration problem to
    fix): back to pending after ``delay_s`` without using up an attempt."""

    reason: str
    delay_s: float
    patch: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Park:
    """Retrying cannot help (bad label, unknown return): dead now, with the reason."""

    reason: str


Outcome = Done | Retry | Wait | Park


class LeaseLost(Exception):
    """Our lease expired and another worker may hold the task: stop without side effects."""


class Lease(Protocol):
    async def save_progress(self, patch: dict[str, Any], *, cover_s: float) -> None:
        """Merges ``patch`` into the task's payload durably; raises LeaseLost when the task is
        no longer ours. ``cover_s``: how long the lease must still last afterwards."""
        ...


class Handler(Protocol):
    kind: str

    async def run(self, task: Task, lease: Lease) -> Outcome: ...
