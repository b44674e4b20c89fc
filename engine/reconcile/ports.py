"""The admin API's contract with the label queue, free of any HTTP import.

The HTTP layer (engine/http.py) and whatever queues labels (the outbox writer) both depend on
this module, not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["LabelRejected", "LabelSubmitter", "SubmitResult"]


@dataclass(frozen=True)
class SubmitResult:
    dedupe_key: str
    # True when the same label was already queued; the answer is still 202 (idempotent POST).
    duplicate: bool = False


class LabelRejected(Exception):
    """The label cannot be queued: 422 for an invalid label, 404 for an unknown return.

    ``reason`` is shown to the API caller, so it must not contain secrets.
    """

    def __init__(self, reason: str, status: int = 422) -> None:
        if status not in (404, 409, 422):
            raise ValueError(f"LabelRejected status must be 404, 409 or 422, got {status}")
        super().__init__(reason)
        self.reason = reason
        self.status = status


class LabelSubmitter(Protocol):
    async def submit(self, parent_after_sales_sn: str, body: dict[str, Any]) -> SubmitResult:
        """Validates ``body`` (one label, either accepted shape) and queues it."""
        ...
