"""Every write attempt the simulator saw, refused ones included (issue 19).

``World.uploads`` and ``OcState.pushes`` hold only what was APPLIED (one entry per effect);
this log holds one entry per attempt that reached the service, with its outcome, so a test can
assert e.g. "no upload was refused as already_uploaded" (the engine retried something done).

Each entry: ``service`` ("temu" or "oc"), ``shopId`` (None when the token is unknown), the
record's key (``parentAfterSalesSn`` for Temu, ``orderNumber``/``operation``/``messageId`` for
OC), ``outcome`` (see below), ``reason`` ("" when accepted), ``errorCode``, ``answerLost``
(applied but the caller never got the answer), ``at`` (epoch seconds) and ``requestId``.

Outcomes: ``accepted`` (applied now), ``replayed`` (OC: a messageId already applied; same
answer, no effect), ``refused`` (nothing applied). Refusal reasons are short words:
``already_uploaded``, ``already_cancelled``, ``not_awaiting_label``, ``mode_mismatch``,
``rate_limited``, ``token`` (gateway token checks), ``fault:<kind>`` (an injected fault before
the service looked at it), ``unauthorized`` (OC 401), otherwise ``error:<code>``.
"""

from __future__ import annotations

from typing import Any

ACCEPTED = "accepted"
REFUSED = "refused"
REPLAYED = "replayed"


class AttemptLog:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def record(
        self,
        service: str,
        *,
        shop_id: str | None,
        outcome: str,
        reason: str = "",
        error_code: int | str | None = None,
        at: float,
        request_id: str,
        **key: Any,
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "service": service,
            "shopId": shop_id,
            **key,
            "outcome": outcome,
            "reason": reason,
            "errorCode": error_code,
            "answerLost": False,
            "at": at,
            "requestId": request_id,
        }
        self.entries.append(entry)
        return entry

    def of(self, service: str, shop_id: str | None = None) -> list[dict[str, Any]]:
        return [
            dict(e)
            for e in self.entries
            if e["service"] == service and (shop_id is None or e["shopId"] == shop_id)
        ]
